# bpc_add_flavour(<name> <definition or "">) builds lib<name>.so and lib<name>.a
# from every folder in BPC_LAYERS. Folder k sees the headers of folders 0..k only.
# Only io/ (checkpoint formats) links jansson, libzip and zlib; the folders below
# it need OpenBLAS and OpenMP alone.
# Everything is compiled with -fvisibility=hidden: the shared libraries export
# only what the public headers declare between BP_API_BEGIN and BP_API_END
# (bpc/config.h), never a bp__ internal; cmake/bpc.map hides the little the
# compiler exports whatever the flags. tests/exported_symbols.sh checks it.
function(bpc_add_flavour name def)
  set(objs)
  set(incs)
  foreach(dir IN LISTS BPC_LAYERS)
    list(APPEND incs "$<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/${dir}>")
    file(GLOB srcs CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/${dir}/*.c")
    if(srcs)
      set(obj ${name}_${dir}_obj)
      add_library(${obj} OBJECT ${srcs})
      target_include_directories(${obj} PRIVATE ${incs})
      set_target_properties(${obj} PROPERTIES C_VISIBILITY_PRESET hidden)
      if(def)
        target_compile_definitions(${obj} PUBLIC ${def})
      endif()
      target_link_libraries(${obj} PRIVATE PkgConfig::OPENBLAS OpenMP::OpenMP_C)
      if(dir STREQUAL "io")
        target_link_libraries(${obj} PRIVATE PkgConfig::JANSSON PkgConfig::LIBZIP PkgConfig::ZLIB)
        if(BPC_HAVE_NIFTI)
          target_include_directories(${obj} PRIVATE ${BPC_NIFTI_INCLUDE_DIR})
          target_compile_definitions(${obj} PRIVATE BPC_HAVE_NIFTI)
        endif()
      endif()
      list(APPEND objs $<TARGET_OBJECTS:${obj}>)
    endif()
  endforeach()

  foreach(kind SHARED STATIC)
    string(TOLOWER ${kind} k)
    set(tgt ${name}_${k})
    add_library(${tgt} ${kind} ${objs})
    set_target_properties(${tgt} PROPERTIES OUTPUT_NAME ${name} EXPORT_NAME ${name}_${k}
                          C_VISIBILITY_PRESET hidden)
    if(kind STREQUAL SHARED)
      set_target_properties(${tgt} PROPERTIES VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
                            LINK_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/bpc.map)
      target_link_options(${tgt} PRIVATE "LINKER:--version-script=${PROJECT_SOURCE_DIR}/cmake/bpc.map")
    endif()
    target_include_directories(${tgt} PUBLIC ${incs} $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    if(def)
      target_compile_definitions(${tgt} PUBLIC ${def})
    endif()
    target_link_libraries(${tgt} PUBLIC PkgConfig::OPENBLAS PkgConfig::JANSSON PkgConfig::LIBZIP PkgConfig::ZLIB OpenMP::OpenMP_C ${BPC_LIBM})
    if(BPC_HAVE_NIFTI)
      target_link_libraries(${tgt} PRIVATE ${BPC_NIFTI2_LIB} ${BPC_ZNZ_LIB} ${BPC_Z_LIB})
    endif()
  endforeach()
  add_library(bpc::${name} ALIAS ${name}_shared)
endfunction()
