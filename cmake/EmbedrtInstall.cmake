# Install rules and the CMake package (find_package(embedrt)).
#
#   cmake --install <build> --prefix <prefix>
#
# installs the static libraries (embedrt::protocol, embedrt::embedrt), the
# public headers (protocol/embedrt/**.hpp, actors/embedrt/**.hpp; never
# actors/src), the `embedrt` command, under <libdir>/cmake/embedrt the
# package files and FindCAF.cmake, and under <datadir>/doc/embedrt the LICENSE
# and the deployment examples (docs/examples/deploy). All of that is the
# component `embedrt`. With EMBEDRT_INSTALL_STRIP (default ON) the command is
# installed stripped and the archives without debug sections; the command's
# debug information is the component `debug`, installed only when asked for:
#
#   cmake --install <build> --prefix <prefix> --component debug
#
# (<prefix>/lib/debug/.build-id/xx/yyyy.debug; docs/packaging.md). A consumer
# then writes
#
#   find_package(embedrt 0.1 REQUIRED)
#   target_link_libraries(app PRIVATE embedrt::embedrt)
#
# with -DCMAKE_PREFIX_PATH=<prefix> (docs/examples/host_app).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(EMBEDRT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/embedrt)

# embedrt_protocol links embedrt_rapidjson privately, so the static library's
# export names it as $<LINK_ONLY:embedrt::embedrt_rapidjson> and the target
# has to be exported too. It carries nothing a consumer links (RapidJSON is
# header-only and only used inside the libraries), so its include directory
# is kept to the build tree: the installed package neither records this
# machine's RapidJSON path nor needs RapidJSON to be found.
get_target_property(_embedrt_rj_inc embedrt_rapidjson
                    INTERFACE_INCLUDE_DIRECTORIES)
get_target_property(_embedrt_rj_sys embedrt_rapidjson
                    INTERFACE_SYSTEM_INCLUDE_DIRECTORIES)
if(_embedrt_rj_inc)
  set_target_properties(
    embedrt_rapidjson PROPERTIES INTERFACE_INCLUDE_DIRECTORIES
                                 "$<BUILD_INTERFACE:${_embedrt_rj_inc}>")
endif()
if(_embedrt_rj_sys)
  set_target_properties(
    embedrt_rapidjson PROPERTIES INTERFACE_SYSTEM_INCLUDE_DIRECTORIES
                                 "$<BUILD_INTERFACE:${_embedrt_rj_sys}>")
endif()

# Static libraries built with sanitizers need the sanitizer runtime in every
# executable that links them: the installed targets say so.
if(EMBEDRT_SANITIZE)
  set_property(
    TARGET embedrt_protocol
    APPEND
    PROPERTY INTERFACE_LINK_OPTIONS
             "$<INSTALL_INTERFACE:${EMBEDRT_SANITIZER_FLAGS}>")
endif()

# The include directories come from the targets' $<INSTALL_INTERFACE:include>.
install(
  TARGETS embedrt_protocol embedrt embedrt_rapidjson
  EXPORT embedrtTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET embedrt_cli)
  install(TARGETS embedrt_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# Public headers only: embedrt/protocol/*.hpp and embedrt/*.hpp.
install(
  DIRECTORY ${PROJECT_SOURCE_DIR}/protocol/embedrt
            ${PROJECT_SOURCE_DIR}/actors/embedrt
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING
  PATTERN "*.hpp")

install(
  EXPORT embedrtTargets
  NAMESPACE embedrt::
  DESTINATION ${EMBEDRT_INSTALL_CMAKEDIR})

configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/embedrtConfig.cmake.in
  ${PROJECT_BINARY_DIR}/embedrtConfig.cmake
  INSTALL_DESTINATION ${EMBEDRT_INSTALL_CMAKEDIR})
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/embedrtConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/embedrtConfig.cmake
              ${PROJECT_BINARY_DIR}/embedrtConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake
              ${PROJECT_SOURCE_DIR}/cmake/FindLMDB.cmake
        DESTINATION ${EMBEDRT_INSTALL_CMAKEDIR})

install(FILES ${PROJECT_SOURCE_DIR}/LICENSE
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/embedrt)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/examples/deploy
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/embedrt/examples)

# Stripped by default: an unstripped RelWithDebInfo install is ~270 MB, almost
# all of it DWARF of CAF and Beast templates. These rules come after the
# install() of every file they strip, all of them in this file: rules run in
# the order they are declared, but a subdirectory's after the top level's.
# EMBEDRT_INSTALL_STRIP is defined in the top-level CMakeLists.txt (the tests
# need it too).
if(EMBEDRT_INSTALL_STRIP)
  set(_embedrt_strip_exes "")
  if(TARGET embedrt_cli)
    set(_embedrt_strip_exes
        "${CMAKE_INSTALL_BINDIR}/$<TARGET_FILE_NAME:embedrt_cli>")
    install(
      CODE "set(EMBEDRT_STRIP_MODE debuginfo)
            set(EMBEDRT_OBJCOPY \"${CMAKE_OBJCOPY}\")
            set(EMBEDRT_READELF \"${CMAKE_READELF}\")
            set(EMBEDRT_DEBUG_SOURCE \"$<TARGET_FILE:embedrt_cli>\")
            set(EMBEDRT_DEBUG_WORKDIR \"${PROJECT_BINARY_DIR}/debuginfo\")"
      COMPONENT debug
      EXCLUDE_FROM_ALL)
    install(SCRIPT ${PROJECT_SOURCE_DIR}/cmake/EmbedrtStrip.cmake
            COMPONENT debug EXCLUDE_FROM_ALL)
  endif()
  install(
    CODE "set(EMBEDRT_STRIP_MODE strip)
          set(EMBEDRT_STRIP_TOOL \"${CMAKE_STRIP}\")
          set(EMBEDRT_STRIP_EXECUTABLES \"${_embedrt_strip_exes}\")
          set(EMBEDRT_STRIP_ARCHIVES
              \"${CMAKE_INSTALL_LIBDIR}/$<TARGET_FILE_NAME:embedrt_protocol>;${CMAKE_INSTALL_LIBDIR}/$<TARGET_FILE_NAME:embedrt>\")")
  install(SCRIPT ${PROJECT_SOURCE_DIR}/cmake/EmbedrtStrip.cmake)
endif()
