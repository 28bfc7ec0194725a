// The in-memory embedding cache without actors: the key, the byte bound,
// the time to live, and W-TinyLFU's hit ratio against plain LRU on skewed
// traces (the numbers docs/caching.md records come from the last test).
#include "cache_policy.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using namespace embedrt::detail;
using namespace std::chrono_literals;

namespace {

using clock_type = embedding_cache::clock;

std::vector<float> vec_of(std::size_t dims, float v) {
  return std::vector<float>(dims, v);
}

/// Draws ranks 0..n-1 with P(k) ~ 1/(k+1)^s (inverse CDF over a table).
class zipf {
 public:
  zipf(std::size_t n, double s) : cdf_(n) {
    double sum = 0;
    for (std::size_t k = 0; k < n; ++k) {
      sum += 1.0 / std::pow(static_cast<double>(k + 1), s);
      cdf_[k] = sum;
    }
    for (auto& c : cdf_)
      c /= sum;
  }
  template <class Rng>
  std::size_t operator()(Rng& rng) {
    auto u = std::uniform_real_distribution<double>{0, 1}(rng);
    return static_cast<std::size_t>(
        std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
  }

 private:
  std::vector<double> cdf_;
};

/// Hit ratio of a cache of `entries` entries (one size each) on `trace`.
double hit_ratio(eviction_policy policy, std::size_t entries,
                 const std::vector<std::string>& trace) {
  const std::size_t dims = 16;
  auto per_entry = cache_key("m", 0, trace.front()).size() + dims * 4
      + cache_entry_overhead;
  embedding_cache cache{entries * per_entry, 0ms, policy};
  auto now = clock_type::now();
  std::size_t hits = 0;
  for (auto& text : trace) {
    auto key = cache_key("m", 0, text);
    if (cache.get(key, now))
      ++hits;
    else
      cache.put(key, vec_of(dims, 1), now);
  }
  return static_cast<double>(hits) / static_cast<double>(trace.size());
}

std::string text_of(std::size_t k) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "text-%010zu", k);
  return buf;
}

} // namespace

TEST_CASE("cache keys differ in model, dimensions, input and kind of input",
          "[cache]") {
  auto base = cache_key("m", 8, "ab");
  CHECK(base == cache_key("m", 8, "ab"));
  CHECK(base != cache_key("m2", 8, "ab"));
  CHECK(base != cache_key("m", 16, "ab"));
  CHECK(base != cache_key("m", 8, "ab "));
  CHECK(base != cache_key("m", 0, "ab"));
  // The model ends at a NUL: "m" + "\0..." never equals "m\0" as a model.
  CHECK(cache_key("a", 0, "b") != cache_key(std::string{"a\0", 2}, 0, "b"));
  // Token ids and text never share a key, even with the same bytes.
  std::vector<int32_t> ids{0x64636261}; // "abcd" little-endian
  CHECK(cache_key("m", 0, ids) != cache_key("m", 0, "abcd"));
  CHECK(cache_key("m", 0, ids) == cache_key("m", 0, std::vector<int32_t>{ids}));
}

TEST_CASE("a hit returns the stored vector; the full key is compared",
          "[cache]") {
  embedding_cache cache{1 << 20, 0ms};
  auto now = clock_type::now();
  cache.put(cache_key("m", 4, "x"), {1, 2, 3, 4}, now);
  auto* v = cache.get(cache_key("m", 4, "x"), now);
  REQUIRE(v != nullptr);
  CHECK(*v == std::vector<float>{1, 2, 3, 4});
  CHECK(cache.get(cache_key("m", 4, "y"), now) == nullptr);
  CHECK(cache.get(cache_key("m", 8, "x"), now) == nullptr);
  CHECK(cache.counters().hits == 1);
  CHECK(cache.counters().misses == 2);
}

TEST_CASE("the byte bound holds under a 10x oversubscribed key space",
          "[cache]") {
  for (auto policy : {eviction_policy::tinylfu, eviction_policy::lru}) {
    const std::size_t max_bytes = 256 * 1024;
    embedding_cache cache{max_bytes, 0ms, policy};
    auto now = clock_type::now();
    std::mt19937_64 rng{42};
    std::size_t inserted = 0;
    std::size_t entry
        = cache_key("m", 0, text_of(0)).size() + 256 * 4 + cache_entry_overhead;
    // Ten times the bound in distinct keys, with re-reads of older ones.
    for (std::size_t k = 0; inserted * entry < 10 * max_bytes; ++k) {
      auto key = cache_key("m", 0, text_of(k));
      cache.put(key, vec_of(256, static_cast<float>(k)), now);
      ++inserted;
      cache.get(cache_key("m", 0, text_of(rng() % (k + 1))), now);
      REQUIRE(cache.bytes() <= max_bytes);
    }
    CHECK(cache.counters().evictions > 0);
    CHECK(cache.entries() * entry == cache.bytes());
    CHECK(cache.entries() <= max_bytes / entry);
  }
}

TEST_CASE("entries expire after the time to live", "[cache]") {
  embedding_cache cache{1 << 20, 1000ms};
  auto t0 = clock_type::now();
  cache.put(cache_key("m", 0, "x"), {1}, t0);
  CHECK(cache.get(cache_key("m", 0, "x"), t0 + 999ms) != nullptr);
  CHECK(cache.get(cache_key("m", 0, "x"), t0 + 1000ms) == nullptr);
  CHECK(cache.counters().expirations == 1);
  CHECK(cache.entries() == 0);
  CHECK(cache.bytes() == 0);
}

TEST_CASE("an entry larger than the whole bound is not stored", "[cache]") {
  embedding_cache cache{4096, 0ms};
  auto now = clock_type::now();
  cache.put(cache_key("m", 0, "big"), vec_of(2048, 1), now);
  CHECK(cache.entries() == 0);
  CHECK(cache.counters().too_large == 1);
}

TEST_CASE("W-TinyLFU beats LRU on Zipf traces and resists scans", "[cache]") {
  std::mt19937_64 rng{2024};
  const std::size_t keys = 100'000;
  const std::size_t length = 400'000;
  zipf z{keys, 0.9};
  std::vector<std::string> trace;
  trace.reserve(length);
  for (std::size_t i = 0; i < length; ++i)
    trace.push_back(text_of(z(rng)));
  // The same popular traffic with a one-off scan (a bulk job over unique
  // texts) interleaved: every fourth access is new.
  std::vector<std::string> scanned;
  scanned.reserve(length);
  std::size_t next_unique = keys;
  for (std::size_t i = 0; i < length; ++i)
    scanned.push_back(i % 4 == 3 ? text_of(next_unique++) : trace[i]);
  for (std::size_t entries : {1000, 5000}) {
    auto lfu = hit_ratio(eviction_policy::tinylfu, entries, trace);
    auto lru = hit_ratio(eviction_policy::lru, entries, trace);
    auto lfu_scan = hit_ratio(eviction_policy::tinylfu, entries, scanned);
    auto lru_scan = hit_ratio(eviction_policy::lru, entries, scanned);
    std::printf("cache of %zu entries, Zipf 0.9 over %zu keys: W-TinyLFU "
                "%.3f, LRU %.3f; with 25 %% scan: W-TinyLFU %.3f, LRU "
                "%.3f\n",
                entries, keys, lfu, lru, lfu_scan, lru_scan);
    CHECK(lfu > lru * 1.05);
    CHECK(lfu_scan > lru_scan * 1.1);
  }
}
