# Runs at install time (cmake --install, cpack), from the install rules of
# EmbedrtInstall.cmake; docs/packaging.md says why.
#
#   EMBEDRT_STRIP_MODE=strip      strips the installed files: executables of
#                                 everything (strip --strip-all), static
#                                 archives of their debug sections
#                                 (strip --strip-debug)
#     EMBEDRT_STRIP_TOOL          the strip program
#     EMBEDRT_STRIP_EXECUTABLES   installed paths, relative to the prefix
#     EMBEDRT_STRIP_ARCHIVES      installed paths, relative to the prefix
#
#   EMBEDRT_STRIP_MODE=debuginfo  installs the debug information of a
#                                 build-tree executable as
#                                 <prefix>/lib/debug/.build-id/xx/yyyy.debug,
#                                 where gdb looks it up by the executable's
#                                 build ID
#     EMBEDRT_OBJCOPY, EMBEDRT_READELF   the binutils programs
#     EMBEDRT_DEBUG_SOURCE        the unstripped executable in the build tree
#     EMBEDRT_DEBUG_WORKDIR       where the .debug file is made first
cmake_minimum_required(VERSION 3.25)

function(embedrt_run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "embedrt install: '${cmd}' failed (${rc}): ${err}")
  endif()
endfunction()

function(embedrt_strip_installed option)
  foreach(rel IN LISTS ARGN)
    set(path "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/${rel}")
    if(NOT EXISTS "${path}")
      message(FATAL_ERROR "embedrt install: ${path} is not installed")
    endif()
    message(STATUS "Stripping (${option}): ${path}")
    embedrt_run("${EMBEDRT_STRIP_TOOL}" ${option} "${path}")
  endforeach()
endfunction()

function(embedrt_install_debuginfo)
  execute_process(
    COMMAND "${EMBEDRT_READELF}" -n "${EMBEDRT_DEBUG_SOURCE}"
    OUTPUT_VARIABLE notes
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT notes MATCHES "Build ID: ([0-9a-f][0-9a-f])([0-9a-f]+)")
    message(FATAL_ERROR "embedrt install: ${EMBEDRT_DEBUG_SOURCE} has no "
                        "GNU build ID (link with -Wl,--build-id)")
  endif()
  set(dir "${CMAKE_MATCH_1}")
  set(name "${CMAKE_MATCH_2}.debug")
  file(MAKE_DIRECTORY "${EMBEDRT_DEBUG_WORKDIR}/${dir}")
  set(work "${EMBEDRT_DEBUG_WORKDIR}/${dir}/${name}")
  embedrt_run("${EMBEDRT_OBJCOPY}" --only-keep-debug
              --compress-debug-sections=zlib "${EMBEDRT_DEBUG_SOURCE}" "${work}")
  file(
    INSTALL
    DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/debug/.build-id/${dir}"
    TYPE FILE
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
    FILES "${work}")
endfunction()

if(EMBEDRT_STRIP_MODE STREQUAL "strip")
  embedrt_strip_installed(--strip-all ${EMBEDRT_STRIP_EXECUTABLES})
  embedrt_strip_installed(--strip-debug ${EMBEDRT_STRIP_ARCHIVES})
elseif(EMBEDRT_STRIP_MODE STREQUAL "debuginfo")
  embedrt_install_debuginfo()
else()
  message(FATAL_ERROR "EmbedrtStrip.cmake: unknown mode '${EMBEDRT_STRIP_MODE}'")
endif()
