# Installs headers under include/bpc/, both flavours' libraries, pkg-config
# files (bpc.pc, bpc64.pc) and a CMake package (find_package(bpc) gives the
# targets bpc::bpc_shared, bpc::bpc_static, bpc::bpc64_shared, bpc::bpc64_static).
include(CMakePackageConfigHelpers)

foreach(dir IN LISTS BPC_LAYERS)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/bpc/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/bpc
          FILES_MATCHING PATTERN "*.h")
endforeach()

install(TARGETS bpc_shared bpc_static bpc64_shared bpc64_static EXPORT bpcTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT bpcTargets NAMESPACE bpc:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/bpc)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/bpcConfig.cmake.in
  ${PROJECT_BINARY_DIR}/bpcConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/bpc)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/bpcConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/bpcConfig.cmake ${PROJECT_BINARY_DIR}/bpcConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/bpc)

# The .pc files are relocatable: they find the prefix from their own folder
# (pkg-config's ${pcfiledir}, which is <prefix>/<libdir>/pkgconfig), so a copy
# installed with `cmake --install build --prefix P` works under P, and so does
# the tree moved elsewhere. An absolute libdir or includedir is kept as given.
string(REGEX REPLACE "[^/]+" ".." BPC_PC_UP "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
set(BPC_PC_PREFIX "\${pcfiledir}/${BPC_PC_UP}")
foreach(kind LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
    set(BPC_PC_${kind} "${CMAKE_INSTALL_${kind}}")
  else()
    set(BPC_PC_${kind} "\${prefix}/${CMAKE_INSTALL_${kind}}")
  endif()
endforeach()
foreach(flavour bpc bpc64)
  if(flavour STREQUAL bpc64)
    set(BPC_PC_CFLAGS "-DBP_REAL_DOUBLE")
    set(BPC_PC_DESC "float64 flavour (gradient checks)")
  else()
    set(BPC_PC_CFLAGS "")
    set(BPC_PC_DESC "float32 flavour")
  endif()
  set(BPC_PC_LIB ${flavour})
  configure_file(${PROJECT_SOURCE_DIR}/cmake/bpc.pc.in ${PROJECT_BINARY_DIR}/${flavour}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${flavour}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()
