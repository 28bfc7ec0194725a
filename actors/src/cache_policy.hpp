// The in-memory embedding cache: keys, a frequency sketch and a byte-bounded
// store with W-TinyLFU eviction (Caffeine's design: a small LRU window in
// front of a segmented-LRU main space, entries moving from the window to the
// main space only when the sketch says they are asked for more often than
// the main space's victim). Plain data, no actors and no locks: the cache
// actor (cache_actor.hpp) owns one and is its only user.
// docs/caching.md has the policy, its measured hit ratios and the key.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace embedrt::detail {

/// Bytes an entry counts for besides its key and its floats (list node, hash
/// node, vector header): the bound is on all of it, not only the payload.
constexpr std::size_t cache_entry_overhead = 160;

/// The cache key of one input: the upstream model (after `model_map`), the
/// requested dimensions and the exact input — its bytes, or its token ids —
/// in one string, so that a lookup compares the whole key, never a hash
/// alone. Independent of the encoding the caller asked for (float or base64).
std::string cache_key(std::string_view model, int32_t dimensions,
                      std::string_view text);
std::string cache_key(std::string_view model, int32_t dimensions,
                      const std::vector<int32_t>& token_ids);

/// The hash of a key, computed once per input (by the request actor that
/// builds the key) and carried with it: the cache's index, its in-flight
/// table and the frequency sketch all use this one value.
uint64_t cache_hash(std::string_view key);

/// A key's bytes (owned elsewhere) with its hash: the index type of the
/// cache's tables, so that no lookup hashes a key again.
struct cache_key_ref {
  std::string_view bytes;
  uint64_t hash = 0;

  friend bool operator==(const cache_key_ref& a, const cache_key_ref& b) {
    return a.hash == b.hash && a.bytes == b.bytes;
  }
};

struct cache_key_ref_hash {
  std::size_t operator()(const cache_key_ref& k) const noexcept {
    return static_cast<std::size_t>(k.hash);
  }
};

/// A count-min sketch of 4-bit-range counters (4 rows, saturating at 15),
/// halved every 10 x width increments so that old popularity fades
/// (TinyLFU's aging).
class frequency_sketch {
 public:
  explicit frequency_sketch(std::size_t expected_entries = 64);
  void increment(uint64_t hash);
  uint32_t frequency(uint64_t hash) const;
  /// Grows the table (counts start again) when more entries than its width
  /// are stored.
  void ensure_capacity(std::size_t entries);

 private:
  std::size_t index(uint64_t hash, int row) const;
  void age();

  std::vector<uint8_t> table_;
  std::size_t mask_ = 0;
  std::size_t additions_ = 0;
  std::size_t sample_size_ = 0;
};

enum class eviction_policy {
  /// W-TinyLFU (the default).
  tinylfu,
  /// Plain LRU (for comparison: tests and the hit-ratio benchmark).
  lru,
};

struct cache_counters {
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t evictions = 0;
  int64_t expirations = 0;
  /// Entries larger than the whole bound, never stored.
  int64_t too_large = 0;
};

/// Vectors by key, bounded in bytes, with an optional time to live.
class embedding_cache {
 public:
  using clock = std::chrono::steady_clock;

  embedding_cache(std::size_t max_bytes, std::chrono::milliseconds ttl,
                  eviction_policy policy = eviction_policy::tinylfu);

  /// The vector stored under `key` (whose `cache_hash` is `hash`), or null
  /// (absent or expired); counts a hit or a miss and the access in the
  /// sketch.
  const std::vector<float>* get(std::string_view key, uint64_t hash,
                                clock::time_point now);
  const std::vector<float>* get(std::string_view key, clock::time_point now) {
    return get(key, cache_hash(key), now);
  }

  /// Stores `vec` under `key` (replacing an older value), evicting what the
  /// policy chooses until the bound holds again.
  void put(std::string key, uint64_t hash, std::vector<float> vec,
           clock::time_point now);
  void put(std::string key, std::vector<float> vec, clock::time_point now) {
    auto hash = cache_hash(key);
    put(std::move(key), hash, std::move(vec), now);
  }

  std::size_t bytes() const {
    return window_bytes_ + probation_bytes_ + protected_bytes_;
  }
  std::size_t entries() const {
    return index_.size();
  }
  std::size_t max_bytes() const {
    return max_bytes_;
  }
  const cache_counters& counters() const {
    return counters_;
  }

 private:
  enum class region : uint8_t { window, probation, protect };

  struct node {
    std::string key;
    std::vector<float> vec;
    std::size_t bytes = 0;
    uint64_t hash = 0;
    clock::time_point expires;
    region where = region::window;
  };
  using list = std::list<node>;
  using iter = list::iterator;

  list& list_of(region r);
  std::size_t& bytes_of(region r);
  void on_hit(iter it);
  void remove(iter it);
  void evict(iter it);
  void drain_window();
  void admit(iter candidate);
  void rebalance_protected();

  std::size_t max_bytes_;
  std::size_t window_max_;
  std::size_t protected_max_;
  std::chrono::milliseconds ttl_;
  eviction_policy policy_;
  list window_;
  list probation_;
  list protected_;
  std::size_t window_bytes_ = 0;
  std::size_t probation_bytes_ = 0;
  std::size_t protected_bytes_ = 0;
  std::unordered_map<cache_key_ref, iter, cache_key_ref_hash> index_;
  frequency_sketch sketch_;
  cache_counters counters_;
};

} // namespace embedrt::detail
