# Finds bpc's dependencies; a missing one stops configuration with the Debian
# package that provides it.
find_package(PkgConfig)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found. Install it with: apt-get install pkg-config")
endif()

function(bpc_require_pkg var module debpkg)
  pkg_check_modules(${var} IMPORTED_TARGET ${module})
  if(NOT ${var}_FOUND)
    message(FATAL_ERROR "${module} not found. Install it with: apt-get install ${debpkg}")
  endif()
endfunction()

bpc_require_pkg(OPENBLAS openblas libopenblas-dev)
bpc_require_pkg(JANSSON jansson libjansson-dev)
bpc_require_pkg(LIBZIP libzip libzip-dev)
bpc_require_pkg(ZLIB zlib zlib1g-dev)
if(BPC_BUILD_TESTS)
  bpc_require_pkg(CMOCKA cmocka libcmocka-dev)
endif()

find_package(OpenMP COMPONENTS C)
if(NOT OpenMP_C_FOUND)
  message(FATAL_ERROR "OpenMP not found. Install it with: apt-get install libgomp1 (gcc) or libomp-dev (clang)")
endif()
find_library(BPC_LIBM m)

# NIfTI (bpc/nifti.h) through Debian's nifticlib, optional: without it the
# library builds and bp_nifti_read/_write say BP_EUNSUPPORTED. Debian 12's
# NIFTI CMake package names a file it does not ship, and there is no .pc
# file, so the header and libraries are found directly.
option(BPC_WITH_NIFTI "Read and write NIfTI volumes when nifticlib is found" ON)
set(BPC_HAVE_NIFTI OFF)
if(BPC_WITH_NIFTI)
  find_path(BPC_NIFTI_INCLUDE_DIR nifti2_io.h PATH_SUFFIXES nifti)
  find_library(BPC_NIFTI2_LIB nifti2)
  find_library(BPC_ZNZ_LIB znz)
  find_library(BPC_Z_LIB z)
  if(BPC_NIFTI_INCLUDE_DIR AND BPC_NIFTI2_LIB AND BPC_ZNZ_LIB AND BPC_Z_LIB)
    set(BPC_HAVE_NIFTI ON)
    message(STATUS "NIfTI: ${BPC_NIFTI2_LIB}")
  else()
    message(STATUS "nifticlib not found: NIfTI reading and writing is off (apt-get install libnifti2-dev)")
  endif()
endif()
