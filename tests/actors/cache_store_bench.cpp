// What one cache miss costs the store alone, in a tight loop (no actors, no
// messages): the floor under the cache's cost per miss in `embedrt bench`
// (docs/benchmarks.md, "Embedding cache: misses only"). Per dimensions
// (8 and 1,536), side by side in each round, every input new:
//
//   key+hash   the key (`cache_key`: model, dimensions, text) and its hash;
//   W-TinyLFU  key+hash, then `find_or_reserve` (a miss: reserved in
//              flight) and `fill` (stored; the window's eviction and the
//              admission contest, which a new input loses: an eviction) —
//              the service's work per missed input;
//   LRU        the same in the store's plain-LRU mode (no sketch, no
//              admission): what the policy adds;
//   hit        key+hash and `find_or_reserve` of a stored input (then
//              copied out, as a lookup's answer does), in the plain-LRU
//              store, which holds the round's newest inputs.
//
// The store is filled to its bound before the rounds, so every miss evicts
// (as in a long-running cache). Prints µs per input of each, medians of the
// rounds, and each one's ratio to key+hash alone.
//
//   cache_store_bench [ROUNDS] [INPUTS] [MAX_BYTES]
//
// Defaults: 7 rounds of 200,000 inputs, a 16 MiB bound.
#include "cache_policy.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace embedrt::detail;

namespace {

using bench_clock = std::chrono::steady_clock;

/// `n` texts of 40 bytes, numbered from `first` (as `embedrt bench` makes
/// them: each one new).
std::vector<std::string> texts(std::size_t first, std::size_t n) {
  std::vector<std::string> out;
  out.reserve(n);
  for (auto i = first; i < first + n; ++i) {
    auto t = "bench text 1-" + std::to_string(i) + " ";
    t.resize(40, 'x');
    out.push_back(std::move(t));
  }
  return out;
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}

struct store_bench {
  store_bench(std::size_t max_bytes, eviction_policy policy, uint32_t dims)
      : cache(max_bytes, std::chrono::milliseconds{0}, policy),
        vec(dims, 0.25f) {
    // Filled to the bound (and a little more: it evicts from then on).
    std::size_t i = 0;
    while (cache.counters().evictions < 1000) {
      cache_key(key, model, static_cast<int32_t>(dims),
                "fill " + std::to_string(i++));
      auto r = cache.find_or_reserve(key, cache_hash(key), 0, now);
      cache.fill(r.ticket, vec.data(), vec.size(), now);
    }
  }

  /// µs per input: every input a miss, reserved and filled.
  double misses(const std::vector<std::string>& in) {
    auto dims = static_cast<int32_t>(vec.size());
    auto t0 = bench_clock::now();
    for (const auto& text : in) {
      cache_key(key, model, dims, text);
      auto r = cache.find_or_reserve(key, cache_hash(key), 0, now);
      cache.fill(r.ticket, vec.data(), vec.size(), now);
    }
    return per_input(t0, in.size());
  }

  /// µs per input: every input stored (the last `in.size()` filled), its
  /// vector copied out.
  double hits(const std::vector<std::string>& in, std::size_t& found) {
    auto dims = static_cast<int32_t>(vec.size());
    auto t0 = bench_clock::now();
    for (const auto& text : in) {
      cache_key(key, model, dims, text);
      auto r = cache.find_or_reserve(key, cache_hash(key), 0, now);
      if (r.found == cache_find::hit) {
        out.assign(r.vec.data, r.vec.data + r.vec.size);
        ++found;
      } else {
        cache.fill(r.ticket, vec.data(), vec.size(), now);
      }
    }
    return per_input(t0, in.size());
  }

  static double per_input(bench_clock::time_point t0, std::size_t n) {
    std::chrono::duration<double, std::micro> d = bench_clock::now() - t0;
    return d.count() / static_cast<double>(n);
  }

  static constexpr const char* model = "text-embedding-3-small";
  embedding_cache cache;
  std::vector<float> vec;
  std::vector<float> out;
  std::string key;
  embedding_cache::clock::time_point now{};
};

/// µs per input of the key and its hash alone.
double keys_only(const std::vector<std::string>& in, uint32_t dims,
                 uint64_t& sink) {
  std::string key;
  auto t0 = bench_clock::now();
  for (const auto& text : in) {
    cache_key(key, store_bench::model, static_cast<int32_t>(dims), text);
    sink += cache_hash(key);
  }
  return store_bench::per_input(t0, in.size());
}

} // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  std::size_t n = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 200000;
  std::size_t max_bytes
      = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 16u << 20;
  if (rounds < 1 || n < 1 || max_bytes < 1) {
    std::fprintf(stderr,
                 "usage: cache_store_bench [ROUNDS] [INPUTS] [MAX_BYTES]\n");
    return 2;
  }
  std::printf("# %d rounds of %zu new inputs (40-byte texts), bound %zu bytes; "
              "us per input, median of the rounds\n",
              rounds, n, max_bytes);
  std::printf("%-6s %10s %10s %10s %10s   %s\n", "dims", "key+hash",
              "W-TinyLFU", "LRU", "hit", "W-TinyLFU / LRU");
  uint64_t sink = 0;
  for (uint32_t dims : {8u, 1536u}) {
    store_bench lfu{max_bytes, eviction_policy::tinylfu, dims};
    store_bench lru{max_bytes, eviction_policy::lru, dims};
    std::vector<double> k, l, r, h;
    std::size_t found = 0;
    std::size_t next = 1;
    for (int i = 0; i < rounds; ++i) {
      // The same new inputs for each variant of a round, interleaved.
      auto in = texts(next, n);
      next += n;
      k.push_back(keys_only(in, dims, sink));
      l.push_back(lfu.misses(in));
      r.push_back(lru.misses(in));
      // The LRU store holds the round's newest inputs: all hits (if they
      // fit the bound; else the rest are filled).
      auto tail = std::min<std::size_t>(n, lru.cache.entries() / 2);
      std::vector<std::string> recent(in.end() - static_cast<long>(tail),
                                      in.end());
      h.push_back(lru.hits(recent, found));
    }
    std::printf("%-6u %10.3f %10.3f %10.3f %10.3f   %.2f\n", dims, median(k),
                median(l), median(r), median(h), median(l) / median(r));
    std::printf(
        "       hits found %zu, W-TinyLFU evictions %lld, entries %zu\n", found,
        static_cast<long long>(lfu.cache.counters().evictions),
        lfu.cache.entries());
  }
  return sink == 42 ? 1 : 0;
}
