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
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
endfunction()
