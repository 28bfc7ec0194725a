// A log-linear (HDR-style) histogram of non-negative integers: latencies in
// nanoseconds, batch sizes in inputs. Shared by the metrics actor, the
// Prometheus renderer and `embedrt bench`, so that every percentile embedrt
// prints comes from the same buckets.
//
// Buckets: 0..8 exactly, then 8 buckets per power of two. Bucket b > 0 holds
// the values in (lower(b), upper(b)] -- upper bounds are inclusive, as
// Prometheus' `le` -- and is at most 12.5 % wide relative to its lower
// bound, from 1 ns to 2^63 ns (no configured range, no overflow bucket). A
// quantile is reported as the upper bound of the bucket holding the
// nearest-rank sample (clamped to the largest value recorded), so it is
// never below the true value and at most one bucket above it.
//
// Recording is O(1) (a count-leading-zeros and an increment); memory grows
// with the largest value recorded (about 270 buckets, 2 KiB, for 100 s in
// ns). A plain aggregate with `inspect`, so it travels in
// `metrics_snapshot` across nodes.
#pragma once

#include <caf/meta/type_name.hpp>
#include <cstdint>
#include <vector>

namespace embedrt {

struct log_histogram {
  /// log2 of the sub-buckets per power of two.
  static constexpr uint32_t sub_bits = 3;
  static constexpr uint64_t sub_count = uint64_t{1} << sub_bits;

  /// counts[b] = values recorded in bucket b (trailing empty buckets are
  /// not stored).
  std::vector<uint64_t> counts;
  /// Number of values, their sum and the largest one.
  uint64_t count = 0;
  uint64_t sum = 0;
  uint64_t max = 0;

  /// Records `value` `n` times (negative values count as 0).
  void record(int64_t value, uint64_t n = 1);

  /// Adds every value of `other`.
  void merge(const log_histogram& other);

  /// The value at nearest-rank percentile `p` (0 < p <= 100): the upper
  /// bound of the bucket holding sample number ceil(p/100 * count), clamped
  /// to `max`; 0 when empty.
  uint64_t percentile(double p) const;

  /// Number of recorded values <= `bound`, exact when `bound` is a bucket
  /// upper bound (`upper_bound(bucket_of(bound)) == bound`).
  uint64_t count_at_most(uint64_t bound) const;

  /// The bucket of `value`.
  static uint32_t bucket_of(uint64_t value);

  /// The inclusive upper bound of bucket `b` (lower bound: the upper bound
  /// of b - 1, exclusive).
  static uint64_t upper_bound(uint32_t b);

  bool empty() const noexcept {
    return count == 0;
  }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, log_histogram& x) {
  return f(caf::meta::type_name("embedrt.log_histogram"), x.counts, x.count,
           x.sum, x.max);
}

} // namespace embedrt
