#include "embedrt/protocol/histogram.hpp"

#include <algorithm>
#include <cmath>

namespace embedrt {

namespace {

/// Values above this share the last bucket (2^63 ns is 292 years).
constexpr uint64_t max_value = uint64_t{1} << 63;

/// Bucket of x = value - 1 among the raw buckets [lo, hi) of the HDR layout:
/// 0..7 exactly, then `sub_count` per power of two.
uint32_t raw_bucket(uint64_t x) {
  constexpr auto sub = log_histogram::sub_count;
  constexpr auto bits = log_histogram::sub_bits;
  if (x < sub)
    return static_cast<uint32_t>(x);
  auto e = static_cast<uint32_t>(63 - __builtin_clzll(x));
  auto s = (x >> (e - bits)) - sub;
  return static_cast<uint32_t>(sub + (e - bits) * sub + s);
}

} // namespace

uint32_t log_histogram::bucket_of(uint64_t value) {
  if (value == 0)
    return 0;
  return raw_bucket(std::min(value, max_value) - 1) + 1;
}

uint64_t log_histogram::upper_bound(uint32_t b) {
  if (b == 0)
    return 0;
  uint64_t r = b - 1;
  if (r < sub_count)
    return r + 1;
  auto e = (r - sub_count) / sub_count + sub_bits;
  auto s = (r - sub_count) % sub_count;
  return (sub_count + 1 + s) << (e - sub_bits);
}

void log_histogram::record(int64_t value, uint64_t n) {
  auto v = value < 0 ? uint64_t{0} : static_cast<uint64_t>(value);
  auto b = bucket_of(v);
  if (b >= counts.size())
    counts.resize(b + 1, 0);
  counts[b] += n;
  count += n;
  sum += v * n;
  max = std::max(max, v);
}

void log_histogram::merge(const log_histogram& other) {
  if (other.counts.size() > counts.size())
    counts.resize(other.counts.size(), 0);
  for (std::size_t b = 0; b < other.counts.size(); ++b)
    counts[b] += other.counts[b];
  count += other.count;
  sum += other.sum;
  max = std::max(max, other.max);
}

uint64_t log_histogram::percentile(double p) const {
  if (count == 0)
    return 0;
  // p * n / 100 in this order, minus a tolerance, so that 99.9 (not exact in
  // binary) does not round up past an exact rank.
  auto rank = static_cast<uint64_t>(
      std::ceil(p * static_cast<double>(count) / 100.0 - 1e-9));
  rank = std::clamp<uint64_t>(rank, 1, count);
  uint64_t seen = 0;
  for (std::size_t b = 0; b < counts.size(); ++b) {
    seen += counts[b];
    if (seen >= rank)
      return std::min(upper_bound(static_cast<uint32_t>(b)), max);
  }
  return max;
}

uint64_t log_histogram::count_at_most(uint64_t bound) const {
  uint64_t n = 0;
  for (std::size_t b = 0; b < counts.size(); ++b) {
    if (upper_bound(static_cast<uint32_t>(b)) > bound)
      break;
    n += counts[b];
  }
  return n;
}

} // namespace embedrt
