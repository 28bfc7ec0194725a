// Resource figures of the running process: threads (/proc/self/task), CPU
// time and peak RSS (getrusage), current RSS (/proc/self/statm), start time
// (/proc/self/stat) and usable cores. Used by the metrics actor
// (process_* metrics) and by `embedrt bench`. Free of CAF; no function
// throws; a figure that cannot be read is 0.
#pragma once

#include <cstddef>
#include <cstdint>

namespace embedrt {

/// Number of threads of this process (entries of /proc/self/task).
std::size_t thread_count() noexcept;

/// CPU time and peak resident set size of this process so far.
struct usage_sample {
  /// User + system CPU seconds, all threads.
  double cpu_s = 0.0;
  /// Peak resident set size (ru_maxrss) in MiB.
  double max_rss_mb = 0.0;
};

usage_sample sample_usage() noexcept;

/// Current resident set size in bytes.
int64_t resident_bytes() noexcept;

/// When this process started, in seconds since the Unix epoch.
double process_start_time() noexcept;

/// Cores this process may run on (its CPU affinity mask), at least 1.
std::size_t usable_cores() noexcept;

} // namespace embedrt
