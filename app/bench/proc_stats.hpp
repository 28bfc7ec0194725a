// Resource figures of the running process, for `embedrt bench`: threads
// (from /proc/self/task), CPU time and peak RSS (getrusage), usable cores.
// Free of CAF and Beast; no function throws.
#pragma once

#include <cstddef>

namespace embedrt::bench {

/// Number of threads of this process (entries of /proc/self/task); 0 if
/// /proc is not available.
std::size_t thread_count() noexcept;

/// CPU time and peak resident set size of this process so far.
struct usage_sample {
  /// User + system CPU seconds, all threads.
  double cpu_s = 0.0;
  /// Peak resident set size (ru_maxrss) in MiB.
  double max_rss_mb = 0.0;
};

usage_sample sample_usage() noexcept;

/// Cores this process may run on (its CPU affinity mask), at least 1.
std::size_t usable_cores() noexcept;

} // namespace embedrt::bench
