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
