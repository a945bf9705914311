# libbpc_mpi / libbpc64_mpi: communicators over MPI (mpi/), built when MPI is
# found. libbpc itself never needs MPI: without it bpc builds and trains on
# one machine exactly as before.
option(BPC_WITH_MPI "Build libbpc_mpi (bpc/comm_mpi.h) when MPI is found" ON)
set(BPC_HAVE_MPI OFF)
if(BPC_WITH_MPI)
  find_package(MPI COMPONENTS C)
  if(MPI_C_FOUND)
    set(BPC_HAVE_MPI ON)
  else()
    message(STATUS "MPI not found: libbpc_mpi is not built (apt-get install libopenmpi-dev openmpi-bin)")
  endif()
endif()

if(BPC_HAVE_MPI)
  file(GLOB BPC_MPI_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/mpi/*.c)
  foreach(flavour bpc bpc64)
    foreach(kind SHARED STATIC)
      string(TOLOWER ${kind} k)
      set(tgt ${flavour}_mpi_${k})
      add_library(${tgt} ${kind} ${BPC_MPI_SOURCES})
      set_target_properties(${tgt} PROPERTIES OUTPUT_NAME ${flavour}_mpi EXPORT_NAME ${flavour}_mpi_${k}
                                              C_VISIBILITY_PRESET hidden)
      if(kind STREQUAL SHARED)
        set_target_properties(${tgt} PROPERTIES VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR})
      endif()
      target_include_directories(${tgt} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/mpi>
                                               $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
      target_link_libraries(${tgt} PUBLIC ${flavour}_${k} MPI::MPI_C)
    endforeach()
  endforeach()
  install(FILES ${PROJECT_SOURCE_DIR}/mpi/bpc/comm_mpi.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/bpc)
  install(TARGETS bpc_mpi_shared bpc_mpi_static bpc64_mpi_shared bpc64_mpi_static EXPORT bpcTargets
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endif()
