# FindLMDB.cmake -- locate LMDB (Debian's liblmdb-dev ships no CMake config
# file). Creates the imported target LMDB::lmdb and sets LMDB_FOUND,
# LMDB_INCLUDE_DIR, LMDB_LIBRARY and LMDB_VERSION (e.g. 0.9.24).
include(FindPackageHandleStandardArgs)

find_path(LMDB_INCLUDE_DIR NAMES lmdb.h)
find_library(LMDB_LIBRARY NAMES lmdb)

set(LMDB_VERSION "")
if(LMDB_INCLUDE_DIR AND EXISTS "${LMDB_INCLUDE_DIR}/lmdb.h")
  foreach(_part MAJOR MINOR PATCH)
    file(STRINGS "${LMDB_INCLUDE_DIR}/lmdb.h" _line
         REGEX "^#define MDB_VERSION_${_part}[ \t]+[0-9]+")
    string(REGEX REPLACE "^#define MDB_VERSION_${_part}[ \t]+([0-9]+).*" "\\1"
                         _lmdb_${_part} "${_line}")
  endforeach()
  set(LMDB_VERSION "${_lmdb_MAJOR}.${_lmdb_MINOR}.${_lmdb_PATCH}")
endif()

find_package_handle_standard_args(
  LMDB
  REQUIRED_VARS LMDB_INCLUDE_DIR LMDB_LIBRARY
  VERSION_VAR LMDB_VERSION)

if(LMDB_FOUND AND NOT TARGET LMDB::lmdb)
  add_library(LMDB::lmdb UNKNOWN IMPORTED)
  set_target_properties(
    LMDB::lmdb PROPERTIES IMPORTED_LOCATION "${LMDB_LIBRARY}"
                          INTERFACE_INCLUDE_DIRECTORIES "${LMDB_INCLUDE_DIR}")
endif()
mark_as_advanced(LMDB_INCLUDE_DIR LMDB_LIBRARY)
