// Resuming `embedrt embed`: reads back an existing output to learn which ids
// are already written, and finds the torn tail a crash may have left.
//
// Our writer only ever appends whole records, so after a crash (even
// SIGKILL) an output file is a prefix of what was meant to be written: at
// worst its last line lacks its newline (jsonl), or the f32 rows and the
// index disagree at the end. Such a tail is reported for truncation and its
// records are embedded again. Anything else that does not read back as our
// own output (a bad complete line, mixed dimensions) is an error: the caller
// refuses to append to that file. A repeated id (the input repeated it) is
// fine: it is done.
#pragma once

#include "embed/id_set.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

namespace embedrt::app::embed {

struct scan_result {
  /// "" if the output can be resumed; else why not.
  std::string error;
  /// Complete records found (their ids are in the id set).
  uint64_t records = 0;
  /// Dimensions of the records (0 if there are none).
  std::size_t dims = 0;
  /// Bytes of the data file (jsonl, or f32 rows) and of the f32 index to
  /// keep; everything after them is the torn tail.
  uint64_t keep_bytes = 0;
  uint64_t keep_index_bytes = 0;
  /// Bytes of the torn tail beyond `keep_*` (0: nothing to truncate).
  uint64_t torn_bytes = 0;
  uint64_t torn_index_bytes = 0;
};

/// Scans a jsonl output from the start of `fd` (a regular file), adding the
/// ids of its complete records to `ids`.
scan_result scan_jsonl_output(int fd, id_set& ids);

/// Scans an f32 output: the index from the start of `index_fd`, checked
/// against the data file's size (`data_bytes`).
scan_result scan_f32_output(int index_fd, uint64_t data_bytes, id_set& ids);

} // namespace embedrt::app::embed
