# Compile options shared by every embedrt target.
#
# embedrt_target_defaults(<target>) turns on the project's warnings
# (-Wall -Wextra -Werror) and the sanitizers chosen with EMBEDRT_SANITIZE.
# Third-party headers come in as SYSTEM includes through imported targets, so
# their warnings do not fail our build.

set(EMBEDRT_SANITIZER_FLAGS "")
if(EMBEDRT_SANITIZE)
  string(REPLACE "," ";" _san_list "${EMBEDRT_SANITIZE}")
  foreach(_san IN LISTS _san_list)
    if(NOT _san MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "EMBEDRT_SANITIZE: unknown sanitizer '${_san}'")
    endif()
  endforeach()
  set(EMBEDRT_SANITIZER_FLAGS -fsanitize=${EMBEDRT_SANITIZE}
                              -fno-omit-frame-pointer)
  if(EMBEDRT_SANITIZE MATCHES "thread")
    # GCC 12 rejects atomic_thread_fence under TSan (-Wtsan, an error with
    # -Werror) inside Asio; Asio's cross-thread hand-off goes through
    # mutexes that TSan tracks.
    list(APPEND EMBEDRT_SANITIZER_FLAGS -Wno-tsan)
  endif()
  if(EMBEDRT_SANITIZE MATCHES "undefined")
    list(APPEND EMBEDRT_SANITIZER_FLAGS -fno-sanitize-recover=undefined)
  endif()
  # Sanitize everything we build, including test executables.
  add_compile_options(${EMBEDRT_SANITIZER_FLAGS})
  add_link_options(${EMBEDRT_SANITIZER_FLAGS})
endif()

function(embedrt_target_defaults target)
  if(EMBEDRT_FUZZ)
    # The fuzz build (clang) finds crashes; the warnings gate is the default
    # build (GCC), whose -Werror clang's other warnings would only duplicate.
    target_compile_options(${target} PRIVATE -Wall -Wextra)
  else()
    target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
  endif()
endfunction()

# EMBEDRT_FUZZ=ON builds the libFuzzer targets of tests/fuzz (docs/testing.md,
# "Fuzzing"). It needs clang (configure a build dir of its own with
# CC=clang CXX=clang++); everything is compiled with coverage for libFuzzer
# and ASan + UBSan, so the libraries under test are instrumented too.
option(EMBEDRT_FUZZ "Build the libFuzzer targets (clang only)" OFF)
if(EMBEDRT_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "EMBEDRT_FUZZ needs clang: configure a separate "
                        "build dir with CC=clang CXX=clang++")
  endif()
  if(EMBEDRT_SANITIZE)
    message(FATAL_ERROR "EMBEDRT_FUZZ brings its own sanitizers: leave "
                        "EMBEDRT_SANITIZE empty")
  endif()
  add_compile_options(
    -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
    -fsanitize-ignorelist=${PROJECT_SOURCE_DIR}/tests/fuzz/ubsan-ignorelist.txt
    -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
