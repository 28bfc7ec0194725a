# Debian packages with CPack (docs/packaging.md):
#
#   cpack -G DEB     (in the build directory; scripts/package.sh does it all)
#
# makes two packages from the install components of EmbedrtInstall.cmake:
#
#   embedrt_<version>-1_<arch>.deb      component `embedrt`: /usr/bin/embedrt
#       (stripped), the static libraries, the public headers, the CMake package
#       (/usr/lib/cmake/embedrt), LICENSE and the deployment examples
#   embedrt-dbg_<version>-1_<arch>.deb  component `debug`: the command's debug
#       information, /usr/lib/debug/.build-id/xx/yyyy.debug
#
# Depends: the Debian packages of the shared libraries the command links
# (computed by dpkg-shlibdeps: libc6, libstdc++6, libssl3, libcaf-*0.17, ...)
# and ca-certificates (HTTPS upstreams). Recommends: the development packages
# find_package(embedrt) needs (CAF 0.17.6 exactly, as the archives were built
# against it; Boost 1.81; OpenSSL; LMDB), so that `apt install ./embedrt_*.deb` gives
# a working CMake package and `--no-install-recommends` a lean server.
set(EMBEDRT_PACKAGE_CONTACT
    "embedrt maintainers"
    CACHE STRING "Maintainer field of the Debian packages ('Name <email>')")

set(CPACK_PACKAGE_NAME embedrt)
set(CPACK_PACKAGE_VENDOR "The embedrt authors")
set(CPACK_PACKAGE_CONTACT "${EMBEDRT_PACKAGE_CONTACT}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
# Each package's synopsis is the first line of its description below: CPackDeb
# prepends the summary unless it is CPack's default, so it is set to that.
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${CMAKE_PROJECT_NAME} built using CMake")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES OFF) # EmbedrtInstall.cmake strips, keeping debug info

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL embedrt)
if(EMBEDRT_INSTALL_STRIP AND TARGET embedrt_cli)
  list(APPEND CPACK_COMPONENTS_ALL debug)
endif()

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

set(CPACK_DEBIAN_EMBEDRT_PACKAGE_NAME embedrt)
set(CPACK_DEBIAN_EMBEDRT_PACKAGE_SECTION net)
set(CPACK_DEBIAN_EMBEDRT_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_EMBEDRT_PACKAGE_DEPENDS ca-certificates)
set(CPACK_DEBIAN_EMBEDRT_PACKAGE_RECOMMENDS
    "libcaf-dev (>= 0.17.6), libcaf-dev (<< 0.17.7), libboost1.81-dev, libssl-dev, liblmdb-dev"
)
set(CPACK_DEBIAN_EMBEDRT_DESCRIPTION
    "Actor-model concurrent embedding runtime and gateway
embedrt calls OpenAI-compatible POST /v1/embeddings APIs over pooled
keep-alive HTTP/1.1 and HTTPS with typed CAF 0.17 actors: a bounded queue,
continuous batching, retries under a deadline, a circuit breaker per
upstream and Prometheus metrics.

This package has the embedrt command (embed, serve, mock, bench) and the
static libraries, headers and CMake package (find_package(embedrt)); the
development packages that CMake package needs are recommended.")

set(CPACK_DEBIAN_DEBUG_PACKAGE_NAME embedrt-dbg)
set(CPACK_DEBIAN_DEBUG_PACKAGE_SECTION debug)
set(CPACK_DEBIAN_DEBUG_PACKAGE_DEPENDS
    "embedrt (= ${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE})")
set(CPACK_DEBIAN_DEBUG_DESCRIPTION
    "Debug information for the embedrt command
The DWARF of /usr/bin/embedrt, found by gdb through its build ID
(/usr/lib/debug/.build-id).")

include(CPack)
