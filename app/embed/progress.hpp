// The progress line and the final summary of `embedrt embed` (pure
// formatting; the job decides when to draw).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace embedrt::app::embed {

/// What the job has done so far.
struct job_counts {
  /// Records embedded and written in this run.
  uint64_t written = 0;
  /// Records skipped because their id was already in the output.
  uint64_t skipped = 0;
  /// Records that failed (sent to the rejects file).
  uint64_t failed = 0;
  /// Records sent and not yet answered.
  uint64_t in_flight = 0;
  /// Input bytes consumed, and the input's size (0: unknown, e.g. a pipe).
  uint64_t bytes_read = 0;
  uint64_t bytes_total = 0;
};

/// "1,234,567".
std::string group_digits(uint64_t n);

/// "0:42", "12:05", "1:02:03".
std::string format_duration(double seconds);

/// One progress line, without the leading carriage return or the trailing
/// erase-to-end-of-line: a bar and percentage when the input's size is
/// known, the written count, the rate (records written per second over
/// `elapsed_s`), an ETA when the size is known, and the skipped and failed
/// counts, e.g.
/// `[########------------]  41%  8,192 written  4,096/s  ETA 0:03  0 skipped  2
/// failed`.
/// With `width` (> 0, a terminal's columns) the line fits in it: the bar
/// goes first, then the ETA, then the rate, so that the counts (the failed
/// one last) stay visible.
std::string render_progress(const job_counts& c, double elapsed_s,
                            std::size_t width = 0);

} // namespace embedrt::app::embed
