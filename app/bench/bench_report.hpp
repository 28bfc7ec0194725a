// The measurements of `embedrt bench` and their one-line JSON rendering, plus
// the helpers the load generator uses: percentiles from the runtime's
// log_histogram (the same buckets as the `metrics` snapshot and the
// Prometheus histograms), exact nearest-rank percentiles, and the distinct,
// deterministic input texts. Free of CAF and Beast.
#pragma once

#include "embedrt/protocol/histogram.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace embedrt::bench {

/// The nearest-rank percentile `p` (0 < p <= 100) of an ascending sample:
/// the smallest value such that at least p % of the sample is <= it, i.e.
/// `sorted[ceil(p / 100 * n) - 1]`. Requires a non-empty sample.
int64_t nearest_rank(const std::vector<int64_t>& sorted, double p);

/// Latency figures of a sample of durations in nanoseconds: percentiles
/// from log_histogram (the upper bound of the bucket holding the
/// nearest-rank sample: never below the exact value, at most 12.5 % above
/// it), exact max and mean.
struct latency_summary {
  std::size_t count = 0;
  /// Milliseconds; meaningless (and rendered as null) when count == 0.
  double p50_ms = 0;
  double p95_ms = 0;
  double p99_ms = 0;
  double p999_ms = 0;
  double max_ms = 0;
  double mean_ms = 0;
};

/// Records `ns` in a log_histogram and summarizes it.
latency_summary summarize(const std::vector<int64_t>& ns);

/// The exact nearest-rank percentiles of a sample of durations in
/// nanoseconds (sorted in place), with its max and mean. What a comparison
/// with another client's exact percentiles needs: at 50 ms a log_histogram
/// bucket is 4.2 ms wide.
latency_summary summarize_exact(std::vector<int64_t>& ns);

/// Summarizes a histogram of durations in nanoseconds.
latency_summary summarize_histogram(const log_histogram& ns);

/// The text of input `input` of request `request`: "bench text R-I " followed
/// by filler words picked deterministically from `seed`, exactly `bytes`
/// long (or just "bench text R-I" if that is already longer). Texts differ
/// for every (request, input) pair and never end in whitespace.
std::string bench_text(uint64_t seed, uint64_t request, uint32_t input,
                       std::size_t bytes);

/// Everything `embedrt bench` reports.
struct bench_report {
  // -- parameters ------------------------------------------------------------
  uint64_t requests = 0;
  uint64_t concurrency = 0;
  uint32_t inputs = 1;
  int32_t dims = 0;
  uint32_t connections = 0;
  bool batching = true;
  /// Runtime metrics on (`--no-metrics` turns them off).
  bool metrics = true;
  /// The runtime's embedding cache on (`--cache`).
  bool cache = false;
  std::string model;
  uint64_t warmup = 0;
  std::size_t text_bytes = 0;
  int64_t deadline_ms = 0;
  std::size_t workers = 0;
  std::string scheduler;
  std::size_t io_threads = 0;
  uint64_t seed = 0;
  /// True if the built-in upstream ran inside the bench process (its
  /// threads and CPU time are then part of the figures).
  bool embedded_upstream = false;

  // -- results of the measured phase (warm-up excluded) ----------------------
  /// Requests answered with the expected vectors.
  uint64_t ok = 0;
  /// Failed requests by error kind (errc name, CAF `sec` name, or
  /// "wrong_shape" for a result without one vector of `dims` per input).
  std::map<std::string, uint64_t> errors;
  double seconds = 0;
  /// Latencies of successful and of failed requests (log_histogram
  /// percentiles, as the runtime's metrics give them).
  latency_summary ok_latency;
  latency_summary error_latency;
  /// Exact percentiles of the successful requests' latencies.
  latency_summary ok_latency_exact;
  std::size_t threads_start = 0;
  std::size_t threads_peak = 0;
  std::size_t threads_end = 0;
  /// Upstream counters (sums over the upstreams' health), absent if the
  /// service did not report its health.
  std::optional<int64_t> connections_opened;
  std::optional<int64_t> upstream_requests;
  std::optional<int64_t> connection_reuses;
  std::optional<int64_t> restarts;
  std::optional<int64_t> rejected;
  /// Times adaptive concurrency lowered its limit (0 without it), after
  /// overload and after a latency rise.
  std::optional<int64_t> limit_decreases_overload;
  std::optional<int64_t> limit_decreases_latency;
  /// CPU seconds of the measured phase, of the whole process so far, and
  /// the process's peak RSS.
  double cpu_s = 0;
  double cpu_s_process = 0;
  double max_rss_mb = 0;

  uint64_t failed() const noexcept;
};

/// One line of JSON (no trailing newline) with the parameters and results:
/// ok, errors, seconds, req_per_s (answered requests per second),
/// texts_per_s (successfully embedded texts per second), p50/p95/p99/p999/
/// max/mean_ms (log_histogram), exact_p50/p95/p99/p999_ms (exact),
/// error_p50/p99_ms, threads_*, connections_opened,
/// upstream_requests, reuse, restarts, rejected, limit_decreases_overload,
/// limit_decreases_latency, cpu_s, cpu_s_process,
/// cpu_ms_per_1k, max_rss_mb. Undefined figures are null.
std::string to_json(const bench_report& r);

} // namespace embedrt::bench
