# Install rules and the CMake package (find_package(embedrt)).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(
  TARGETS embedrt_protocol embedrt embedrt_rapidjson
  EXPORT embedrtTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

install(
  DIRECTORY ${PROJECT_SOURCE_DIR}/protocol/embedrt
            ${PROJECT_SOURCE_DIR}/actors/embedrt
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING
  PATTERN "*.hpp")

install(
  EXPORT embedrtTargets
  NAMESPACE embedrt::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/embedrt)

configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/embedrtConfig.cmake.in
  ${PROJECT_BINARY_DIR}/embedrtConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/embedrt)
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/embedrtConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/embedrtConfig.cmake
              ${PROJECT_BINARY_DIR}/embedrtConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/embedrt)
