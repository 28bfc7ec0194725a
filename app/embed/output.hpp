// Output of `embedrt embed`: the record formats and a checkpointing writer.
//
// Formats:
// - jsonl: one line per record, `{"id":ID,"embedding":[f,...]}` (floats in
//   their shortest form that reads back as the same float32);
// - f32: the vectors as raw little-endian float32 rows in the output file
//   (row r at byte r * dims * 4), plus an index file with one line per row,
//   `{"id":ID,"row":R,"dims":D}`, written after its row's bytes.
// Rejected records go to a rejects file, one line each:
// `{"id":ID|null,"line":N,"error":"invalid_input","message":"..."}`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace embedrt::app::embed {

enum class output_format : uint8_t { jsonl, f32 };

/// Appends the shortest decimal form of `x` that reads back as `x`.
void append_float(std::string& out, float x);

/// Appends one jsonl output line (with its newline). `id` is canonical JSON.
void append_jsonl_record(std::string& out, std::string_view id,
                         const std::vector<float>& v);

/// Appends one f32 index line (with its newline).
void append_index_record(std::string& out, std::string_view id, uint64_t row,
                         std::size_t dims);

/// Appends `v` as little-endian float32 bytes.
void append_f32(std::string& out, const std::vector<float>& v);

/// Appends one rejects line (with its newline). An empty `id` is written as
/// null (a line whose id could not be read).
void append_reject(std::string& out, std::string_view id, uint64_t line,
                   std::string_view error, std::string_view message);

/// A buffered writer on a file descriptor it does not own. Writes go out with
/// write(2) once `flush_at` bytes are buffered, and on `flush()`; `sync()`
/// flushes and fsyncs (for regular files).
class fd_writer {
 public:
  fd_writer() = default;
  fd_writer(int fd, bool regular_file, std::size_t flush_at = 256 * 1024);

  /// Appends to the buffer (flushing if it grew past `flush_at`). False
  /// after a write error (see `error()`).
  bool append(std::string_view bytes);

  /// The buffer, to append to directly; call `maybe_flush()` after.
  std::string& buffer() noexcept {
    return buf_;
  }
  bool maybe_flush();

  bool flush();
  bool sync();

  /// strerror of the first write error, or "".
  const std::string& error() const noexcept {
    return error_;
  }

  int fd() const noexcept {
    return fd_;
  }

 private:
  int fd_ = -1;
  bool regular_ = false;
  std::size_t flush_at_ = 0;
  std::string buf_;
  std::string error_;
};

/// Writes embedded records in one of the formats and makes them durable at
/// checkpoints: `checkpoint()` writes everything buffered (the f32 rows
/// before their index lines) and fsyncs the data file, then the index.
class output_sink {
 public:
  /// jsonl to `data`, or f32 rows to `data` and index lines to `index`.
  /// `first_row` is the number of rows already in an f32 output (resume).
  output_sink(output_format fmt, fd_writer data, fd_writer index = {},
              uint64_t first_row = 0);

  bool write(std::string_view id, const std::vector<float>& v);

  bool checkpoint();

  /// The first write error ("" if none).
  std::string error() const;

  output_format format() const noexcept {
    return fmt_;
  }

 private:
  output_format fmt_;
  fd_writer data_;
  fd_writer index_;
  uint64_t row_;
};

} // namespace embedrt::app::embed
