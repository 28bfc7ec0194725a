// The in-memory embedding cache: keys, a frequency sketch and a byte-bounded
// store with W-TinyLFU eviction (Caffeine's design: a small LRU window in
// front of a segmented-LRU main space, entries moving from the window to the
// main space only when the sketch says they are asked for more often than
// the main space's victim). Plain data, no actors and no locks: the
// service's cache (service_cache.hpp), part of the service actor's state,
// owns one and is its only user.
// docs/caching.md has the policy, its measured hit ratios and the key.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
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

/// True if `key` (a `cache_key`) is that of the text `text`, under any model
/// and dimensions.
bool cache_key_is_text(std::string_view key, std::string_view text);

/// The hash of a key, computed once per input (by the request actor that
/// builds the key) and carried with it: the cache's index, its in-flight
/// table and the frequency sketch all use this one value.
uint64_t cache_hash(std::string_view key);

/// A count-min sketch of 4-bit-range counters (4 rows, saturating at 15),
/// halved every 10 x width increments so that old popularity fades
/// (TinyLFU's aging). A key's 4 counters lie in one 64-byte block (16
/// counters per row there), as in Caffeine's sketch: one cache line per
/// access instead of four.
class frequency_sketch {
 public:
  explicit frequency_sketch(std::size_t expected_entries = 64);
  void increment(uint64_t hash);
  uint32_t frequency(uint64_t hash) const;
  /// Asks the CPU for the block of `hash`'s counters (a hint: a lookup of
  /// several keys overlaps their memory latency instead of paying it in
  /// turn).
  void prefetch(uint64_t hash) const;
  /// Grows the table (counts start again) when more entries than its width
  /// are stored.
  void ensure_capacity(std::size_t entries);

 private:
  /// The positions of `hash`'s 4 counters.
  void positions(uint64_t hash, std::size_t (&pos)[4]) const;
  void age();

  std::vector<uint8_t> table_;
  /// Width (counters per row) - 1; the table has width / 16 blocks.
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

/// What `find_or_reserve` found under a key.
enum class cache_find : uint8_t {
  /// Stored: `vec` is the vector.
  hit,
  /// In flight under `ticket` (reserved earlier, not filled yet); `tag` is
  /// the tag it was reserved (or last re-tagged) with.
  in_flight,
  /// Absent: reserved now as in flight under `ticket` (the key was moved in).
  reserved,
};

struct cache_reservation {
  cache_find found = cache_find::reserved;
  const std::vector<float>* vec = nullptr;
  uint64_t ticket = 0;
  uint32_t tag = 0;
};

/// Vectors by key, bounded in bytes, with an optional time to live, and the
/// keys in flight (reserved by a lookup that missed, waiting for their
/// vector): one table for both, so that a miss costs one probe and its fill
/// none (the ticket names the entry's slot).
///
/// Entries live in a slab of fixed-size chunks (stable addresses, no
/// allocation per entry besides the key and the vector moved in), linked
/// into the policy's lists by slot index; the index is open addressing
/// (linear probing, backward-shift deletion) over 8-byte buckets.
/// A ticket is a slot and its generation: a ticket whose entry was
/// abandoned, replaced or filled is recognised as stale.
class embedding_cache {
 public:
  using clock = std::chrono::steady_clock;

  embedding_cache(std::size_t max_bytes, std::chrono::milliseconds ttl,
                  eviction_policy policy = eviction_policy::tinylfu);
  ~embedding_cache();
  embedding_cache(const embedding_cache&) = delete;
  embedding_cache& operator=(const embedding_cache&) = delete;

  /// The vector stored under `key` (whose `cache_hash` is `hash`), or null
  /// (absent, in flight or expired); counts a hit or a miss and the access
  /// in the sketch. The pointer is valid until the next non-const call.
  const std::vector<float>* get(std::string_view key, uint64_t hash,
                                clock::time_point now);
  const std::vector<float>* get(std::string_view key, clock::time_point now) {
    return get(key, cache_hash(key), now);
  }

  /// Asks the CPU for what a lookup of `hash` reads first (its index
  /// bucket and its counters in the sketch): called for every key of a
  /// lookup before the first is looked up, so that their cache misses
  /// overlap.
  void prefetch(uint64_t hash) const;

  /// True if entries expire (a TTL is set): without one, lookups and fills
  /// need no clock reading.
  bool expires() const {
    return ttl_.count() > 0;
  }

  /// A lookup that reserves what it misses: a stored vector (a hit), the
  /// ticket of the key in flight, or — absent or expired — a new ticket for
  /// `key`, which is then moved in (untouched otherwise) and tagged `tag`.
  /// Counts like `get`.
  cache_reservation find_or_reserve(std::string& key, uint64_t hash,
                                    uint32_t tag, clock::time_point now);

  /// The vector of the key in flight under `ticket`: stored (and admitted
  /// by the policy). False if the ticket is stale.
  bool fill(uint64_t ticket, std::vector<float> vec, clock::time_point now);
  /// The key in flight under `ticket` is dropped (nobody will fill it).
  bool abandon(uint64_t ticket);
  /// The key of an entry in flight (null: stale ticket).
  const std::string* key_of(uint64_t ticket) const;
  /// The tag of an entry in flight (nullopt: stale ticket).
  std::optional<uint32_t> tag_of(uint64_t ticket) const;

  /// Stores `vec` under `key` (replacing an older value, or an entry in
  /// flight, whose ticket goes stale), evicting what the policy chooses
  /// until the bound holds again.
  void put(std::string key, uint64_t hash, std::vector<float> vec,
           clock::time_point now);
  void put(std::string key, std::vector<float> vec, clock::time_point now) {
    auto hash = cache_hash(key);
    put(std::move(key), hash, std::move(vec), now);
  }

  std::size_t bytes() const {
    return window_.bytes + probation_.bytes + protected_.bytes;
  }
  /// Stored entries (not those in flight).
  std::size_t entries() const {
    return window_.count + probation_.count + protected_.count;
  }
  std::size_t in_flight() const {
    return in_flight_;
  }
  std::size_t max_bytes() const {
    return max_bytes_;
  }
  const cache_counters& counters() const {
    return counters_;
  }

 private:
  enum class region : uint8_t { free, in_flight, window, probation, protect };
  static constexpr uint32_t npos = 0xffffffffu;
  static constexpr std::size_t not_found = static_cast<std::size_t>(-1);
  static constexpr uint32_t chunk_bits = 10;
  static constexpr uint32_t chunk_size = 1u << chunk_bits;

  struct entry {
    std::string key;
    std::vector<float> vec;
    uint64_t hash = 0;
    clock::time_point expires;
    std::size_t bytes = 0;
    uint32_t prev = npos;
    uint32_t next = npos;
    uint32_t generation = 1;
    uint32_t tag = 0;
    region where = region::free;
  };

  struct lru_list {
    uint32_t head = npos;
    uint32_t tail = npos;
    std::size_t count = 0;
    std::size_t bytes = 0;
  };

  /// An index entry (8 bytes): the slot and the low half of the hash,
  /// which gives the home position (tables up to 2^32 buckets) and, in its
  /// bits above those, a filter that spares most mismatches a key compare.
  struct bucket {
    uint32_t hash_lo = 0;
    uint32_t slot = npos;
  };

  entry& at(uint32_t slot) {
    return chunks_[slot >> chunk_bits][slot & (chunk_size - 1)];
  }
  const entry& at(uint32_t slot) const {
    return chunks_[slot >> chunk_bits][slot & (chunk_size - 1)];
  }
  static uint64_t ticket_of(uint32_t slot, uint32_t generation) {
    return (static_cast<uint64_t>(generation) << 32) | slot;
  }
  /// The slot of a ticket still in flight (npos: stale).
  uint32_t live_ticket(uint64_t ticket) const;

  lru_list& list_of(region r);
  void push_front(region r, uint32_t slot);
  void unlink(uint32_t slot);
  uint32_t new_slot();
  void free_slot(uint32_t slot);

  /// The index position of `key`, or not_found.
  std::size_t find_pos(std::string_view key, uint64_t hash) const;
  void index_insert(uint64_t hash, uint32_t slot);
  static uint32_t low(uint64_t hash) {
    return static_cast<uint32_t>(hash);
  }
  void index_erase(std::size_t pos);
  void grow_index();

  /// Fills an in-flight entry (its key already in place) and admits it.
  void store(uint32_t slot, std::vector<float> vec, clock::time_point now);
  void on_hit(uint32_t slot);
  /// Removes an entry (stored or in flight) from the index and its list.
  void remove(uint32_t slot);
  void evict(uint32_t slot);
  void drain_window();
  void admit(uint32_t candidate);
  void rebalance_protected();

  std::size_t max_bytes_;
  std::size_t window_max_;
  std::size_t protected_max_;
  std::chrono::milliseconds ttl_;
  eviction_policy policy_;
  lru_list window_;
  lru_list probation_;
  lru_list protected_;
  std::size_t in_flight_ = 0;
  std::vector<std::unique_ptr<entry[]>> chunks_;
  uint32_t slots_used_ = 0;
  std::vector<uint32_t> free_;
  std::vector<bucket> index_;
  std::size_t index_count_ = 0;
  frequency_sketch sketch_;
  cache_counters counters_;
};

} // namespace embedrt::detail
