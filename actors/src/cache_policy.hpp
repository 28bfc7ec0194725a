// The in-memory embedding cache: keys, a frequency sketch and a byte-bounded
// store with W-TinyLFU eviction (Caffeine's design: a small LRU window in
// front of a segmented-LRU main space, entries moving from the window to the
// main space only when the sketch says they are asked for more often than
// the main space's victim). Plain data, no actors and no locks: the
// service's cache (service_cache.hpp), part of the service actor's state,
// owns one and is its only user.
// docs/caching.md has the policy, its measured hit ratios and the key.
#pragma once

#include "huge_region.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace embedrt::detail {

/// Bytes an entry counts for besides its key and its floats (its slot in the
/// store, with room for a small entry's key and floats, and its share of
/// the index): the bound is on all of it, not only the payload.
constexpr std::size_t cache_entry_overhead = 192;

/// The cache key of one input: the upstream model (after `model_map`), the
/// requested dimensions and the exact input — its bytes, or its token ids —
/// in one string, so that a lookup compares the whole key, never a hash
/// alone. Independent of the encoding the caller asked for (float or base64).
std::string cache_key(std::string_view model, int32_t dimensions,
                      std::string_view text);
std::string cache_key(std::string_view model, int32_t dimensions,
                      const std::vector<int32_t>& token_ids);
/// The same key written into `out` (its memory reused).
void cache_key(std::string& out, std::string_view model, int32_t dimensions,
               std::string_view text);
void cache_key(std::string& out, std::string_view model, int32_t dimensions,
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
  void prefetch(uint64_t hash) const {
    __builtin_prefetch(block_of(hash), 1);
  }
  /// Grows the table (counts start again) when more entries than its width
  /// are stored.
  void ensure_capacity(std::size_t entries) {
    if (entries > mask_ + 1 || table_.empty())
      grow(entries);
  }

 private:
  /// The 64-byte block of `hash`'s counters: row r of a block is its bytes
  /// [16 r, 16 r + 16), and the counter of row r there is `counter(hash,
  /// r)`. The block comes from the hash's high half and the counters from
  /// bits 16 to 31, apart from the index's home position (its low bits, up
  /// to 65,536 buckets): `cache_hash` is wyhash, whose every bit depends on
  /// every byte of the key, so its bits are used as they are (Caffeine
  /// spreads Java's weak hash codes again first).
  uint8_t* block_of(uint64_t hash) const {
    return base_ + (static_cast<std::size_t>(hash >> 32) & blocks_mask_) * 64;
  }
  static std::size_t counter(uint64_t hash, int row) {
    return static_cast<std::size_t>(row * 16) + ((hash >> (16 + 4 * row)) & 15);
  }
  /// A new table sized for `entries` (counts start again).
  void grow(std::size_t entries);
  void age();

  /// The counters, 64-byte aligned (a block is one cache line): `base_`
  /// points into `table_`, which has room for the alignment.
  std::vector<uint8_t> table_;
  uint8_t* base_ = nullptr;
  /// Width (counters per row) - 1; the table has width / 16 blocks.
  std::size_t mask_ = 0;
  std::size_t blocks_mask_ = 0;
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

/// A stored vector's floats, in the store (valid until the store's next
/// non-const call).
struct cached_floats {
  const float* data = nullptr;
  std::size_t size = 0;

  explicit operator bool() const {
    return data != nullptr;
  }
  std::vector<float> to_vector() const {
    return {data, data + size};
  }
};

struct cache_reservation {
  cache_find found = cache_find::reserved;
  cached_floats vec;
  uint64_t ticket = 0;
  uint32_t tag = 0;
};

/// Vectors by key, bounded in bytes, with an optional time to live, and the
/// keys in flight (reserved by a lookup that missed, waiting for their
/// vector): one table for both, so that a miss costs one probe and its fill
/// none (the ticket names the entry's slot).
///
/// Entries live in a slab of fixed-size chunks (stable addresses), linked
/// into the policy's lists by slot index; a small entry's key and floats
/// are copied into its slot, a larger one's floats into a block of their
/// own that an eviction keeps for the next entry of the same dimensions,
/// so that a full cache evicting entries allocates and frees nothing (a
/// key longer than a slot's room shares one allocation with its floats).
/// The index is open addressing (linear probing, backward-shift
/// deletion) over 8-byte buckets.
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

  /// The vector stored under `key` (whose `cache_hash` is `hash`), or none
  /// (absent, in flight or expired); counts a hit or a miss and the access
  /// in the sketch.
  cached_floats get(std::string_view key, uint64_t hash, clock::time_point now);
  cached_floats get(std::string_view key, clock::time_point now) {
    return get(key, cache_hash(key), now);
  }

  /// Asks the CPU for what a lookup of `hash` reads first (its index
  /// bucket and its counters in the sketch): called for every key of a
  /// lookup before the first is looked up, so that their cache misses
  /// overlap.
  void prefetch(uint64_t hash) const;
  /// Asks the CPU for the entry of a ticket (which a fill reads first).
  void prefetch_ticket(uint64_t ticket) const;

  /// True if entries expire (a TTL is set): without one, lookups and fills
  /// need no clock reading.
  bool expires() const {
    return ttl_.count() > 0;
  }

  /// A lookup that reserves what it misses: a stored vector (a hit), the
  /// ticket of the key in flight, or — absent or expired — a new ticket for
  /// `key` (copied in), tagged `tag`. Counts like `get`.
  cache_reservation find_or_reserve(std::string_view key, uint64_t hash,
                                    uint32_t tag, clock::time_point now);

  /// The vector of the key in flight under `ticket` (copied in): stored
  /// (and admitted by the policy). False if the ticket is stale.
  bool fill(uint64_t ticket, const float* data, std::size_t size,
            clock::time_point now);
  bool fill(uint64_t ticket, const std::vector<float>& vec,
            clock::time_point now) {
    return fill(ticket, vec.data(), vec.size(), now);
  }
  /// The key in flight under `ticket` is dropped (nobody will fill it).
  bool abandon(uint64_t ticket);
  /// The key of an entry in flight (none: stale ticket); valid until the
  /// store's next non-const call.
  std::optional<std::string_view> key_of(uint64_t ticket) const;
  /// The tag of an entry in flight (nullopt: stale ticket).
  std::optional<uint32_t> tag_of(uint64_t ticket) const;

  /// Stores `vec` under `key` (replacing an older value, or an entry in
  /// flight, whose ticket goes stale), evicting what the policy chooses
  /// until the bound holds again.
  void put(std::string_view key, uint64_t hash, const std::vector<float>& vec,
           clock::time_point now);
  void put(std::string_view key, const std::vector<float>& vec,
           clock::time_point now) {
    put(key, cache_hash(key), vec, now);
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
  /// Entries whose slots lie in the huge-page region reserved at the start
  /// (0: the bound is too small for one, or the address space was refused);
  /// more slots, for entries in flight beyond what the bound can store, come
  /// from the heap.
  std::size_t region_slots() const {
    return region_chunks_ * chunk_size;
  }
  /// Bytes of the floats' region carved into blocks so far (0: no region,
  /// or its blocks all came back), and its size.
  std::size_t region_block_bytes() const {
    return blocks_carved_;
  }
  std::size_t region_block_capacity() const {
    return blocks_.size();
  }
  /// Entries whose floats are in a block of the region.
  std::size_t region_blocks_in_use() const {
    return blocks_in_use_;
  }
  /// True while the region is being taken over by another size.
  bool region_taking_over() const {
    return blocks_taking_over_;
  }
  /// Bytes of the region's free blocks (evicted entries', kept for the
  /// next of their size).
  std::size_t region_free_bytes() const {
    return blocks_dims_ == 0 ? 0
                             : free_blocks_.size() * block_bytes(blocks_dims_);
  }

 private:
  /// Where an entry is: free, in flight, in one of the policy's lists, or
  /// in none for a moment (a candidate out of the window during its
  /// admission).
  enum class region : uint8_t {
    free,
    in_flight,
    window,
    probation,
    protect,
    detached
  };
  static constexpr uint32_t npos = 0xffffffffu;
  static constexpr std::size_t not_found = static_cast<std::size_t>(-1);
  static constexpr uint32_t chunk_bits = 10;
  static constexpr uint32_t chunk_size = 1u << chunk_bits;

  /// The smallest slot reservation worth huge pages: below it the 2 MiB
  /// rounding would cost more memory than the TLB saves time.
  static constexpr std::size_t huge_region_min = 2 * huge_region::page;

  /// Bytes of key and floats an entry keeps in its slot.
  static constexpr std::size_t inline_bytes = 104;

  /// An entry's memory outside its slot: a long key, a key and its floats
  /// (from the allocator), or the floats alone (a block of the floats'
  /// region, or from the allocator when there is no region or it is full).
  /// A region block is never deleted: it is released from its pointer
  /// (`keep_block`, and the destructor) and goes back to the region.
  using heap_ptr = std::unique_ptr<unsigned char[]>;

  /// An entry: its key, then its floats (at the key's length rounded up to
  /// 4), in `small` when both fit. Otherwise a key that fits stays in
  /// `small` and the floats alone go to `heap` (a block of the same size
  /// for every vector of the same dimensions, so that an evicted entry's
  /// block serves the next entry: the region's free blocks, or `spare_`);
  /// a longer key and its floats share `heap`.
  ///
  /// What the lists, tickets and admission read (hash, links, generation,
  /// region, size) comes first, in 32 bytes: with 64-byte aligned chunks of
  /// 160-byte entries those never straddle two cache lines.
  struct entry {
    uint64_t hash = 0;
    uint32_t prev = npos;
    uint32_t next = npos;
    uint32_t generation = 1;
    uint32_t bytes = 0;
    region where = region::free;
    uint32_t tag = 0;
    uint32_t key_len = 0;
    uint32_t dims = 0;
    clock::time_point expires;
    heap_ptr heap;
    alignas(8) unsigned char small[inline_bytes];

    static std::size_t floats_offset(std::size_t key_len) {
      return (key_len + 3) & ~std::size_t{3};
    }
    /// True if `heap` holds the floats alone (the key is in `small`).
    static bool floats_apart(std::size_t key_len, std::size_t dims) {
      return key_len <= inline_bytes
          && floats_offset(key_len) + dims * sizeof(float) > inline_bytes;
    }
    std::string_view key() const {
      return {reinterpret_cast<const char*>(key_len > inline_bytes ? heap.get()
                                                                   : small),
              key_len};
    }
    /// Where the floats are (for `key_len` and `dims` as set, their memory
    /// allocated).
    const unsigned char* floats_at() const {
      if (floats_apart(key_len, dims))
        return heap.get();
      return (key_len > inline_bytes ? heap.get() : small)
          + floats_offset(key_len);
    }
    unsigned char* floats_at() {
      return const_cast<unsigned char*>(std::as_const(*this).floats_at());
    }
    cached_floats floats() const {
      return {reinterpret_cast<const float*>(floats_at()), dims};
    }
  };

  /// An evicted entry's floats block from the allocator, kept for the next
  /// entry of the same dimensions.
  struct spare_block {
    uint32_t dims = 0;
    heap_ptr block;
  };
  static std::size_t block_bytes(uint32_t dims) {
    return (dims * sizeof(float) + 63) & ~std::size_t{63};
  }
  bool in_blocks(const unsigned char* p) const {
    auto a = reinterpret_cast<std::uintptr_t>(p);
    auto base = reinterpret_cast<std::uintptr_t>(blocks_.data());
    return blocks_.data() != nullptr && a >= base && a < base + blocks_.size();
  }
  /// At most this many spare blocks (and at most 1/64 of the bound in
  /// bytes): a fill evicts about what it stores, so one or two suffice.
  static constexpr std::size_t max_spare_blocks = 8;
  std::size_t spare_bytes() const;

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

  /// `chunk_size` entries, 64-byte aligned.
  struct alignas(64) chunk {
    entry entries[chunk_size];
  };
  /// A chunk in `region_` is destroyed in place (the region's memory goes
  /// with the region); one from the heap is deleted.
  struct chunk_deleter {
    bool in_region = false;
    void operator()(chunk* c) const {
      if (in_region)
        c->~chunk();
      else
        delete c;
    }
  };
  using chunk_ptr = std::unique_ptr<chunk, chunk_deleter>;

  entry& at(uint32_t slot) {
    return chunks_[slot >> chunk_bits]->entries[slot & (chunk_size - 1)];
  }
  const entry& at(uint32_t slot) const {
    return chunks_[slot >> chunk_bits]->entries[slot & (chunk_size - 1)];
  }
  static uint64_t ticket_of(uint32_t slot, uint32_t generation) {
    return (static_cast<uint64_t>(generation) << 32) | slot;
  }
  /// The slot of a ticket still in flight (npos: stale).
  uint32_t live_ticket(uint64_t ticket) const {
    auto slot = static_cast<uint32_t>(ticket & 0xffffffffu);
    if (slot >= slots_used_)
      return npos;
    const auto& e = at(slot);
    return e.where == region::in_flight
            && e.generation == static_cast<uint32_t>(ticket >> 32)
        ? slot
        : npos;
  }

  [[gnu::always_inline]] lru_list& list_of(region r);
  [[gnu::always_inline]] void push_front(region r, uint32_t slot);
  [[gnu::always_inline]] void unlink(uint32_t slot);
  uint32_t new_slot();
  void free_slot(uint32_t slot);
  /// A block for `dims` floats: a free one of the region, a new one carved
  /// from it, a spare one, or else a new one from the allocator.
  heap_ptr take_block(uint32_t dims);
  /// A block of the region for `dims` floats (free or newly carved), or
  /// null: no region, another size's, taken over, or full.
  unsigned char* region_block(uint32_t dims);
  void keep_block(heap_ptr block, uint32_t dims);

  /// The index position of `key`, or not_found.
  std::size_t find_pos(std::string_view key, uint64_t hash) const;
  /// The index position of the entry in `slot` (which is indexed).
  std::size_t slot_pos(uint32_t slot) const;
  /// Copies `key` into the free slot `slot` and reserves it in flight.
  void reserve(uint32_t slot, std::string_view key, uint64_t hash,
               uint32_t tag);
  void index_insert(uint64_t hash, uint32_t slot);
  static uint32_t low(uint64_t hash) {
    return static_cast<uint32_t>(hash);
  }
  void index_erase(std::size_t pos);
  void grow_index();

  /// Fills an in-flight entry (its key already in place) and admits it.
  void store(uint32_t slot, const float* data, std::size_t size,
             clock::time_point now);
  void on_hit(uint32_t slot);
  /// Removes an entry (stored or in flight) from the index and its list.
  void remove(uint32_t slot);
  void evict(uint32_t slot);
  void drain_window();
  bool admit(uint32_t candidate);
  /// Asks the CPU for what the next admission reads (the next candidate's
  /// and victims' counters and index buckets): with every fill admitting
  /// one candidate, they are in cache by the time it comes.
  void prefetch_admission() const;
  void rebalance_protected();
  /// A candidate asked for at least this often that loses to its victim is
  /// admitted all the same 1 time in 128 (`admit`: Caffeine's rule).
  static constexpr uint32_t admit_warm = 6;
  uint64_t next_random() {
    // xorshift64: the admission's coin, not a secret.
    random_ ^= random_ << 13;
    random_ ^= random_ >> 7;
    random_ ^= random_ << 17;
    return random_;
  }

  std::size_t max_bytes_;
  std::size_t window_max_;
  std::size_t protected_max_;
  std::chrono::milliseconds ttl_;
  eviction_policy policy_;
  lru_list window_;
  lru_list probation_;
  lru_list protected_;
  std::size_t in_flight_ = 0;
  /// Room for the chunks of as many entries as the bound can hold (each
  /// counts at least `cache_entry_overhead` bytes), in huge pages, when
  /// that is at least `huge_region_min` bytes; chunks beyond it (entries in
  /// flight are not counted against the bound) come from the heap.
  huge_region region_;
  std::size_t region_chunks_ = 0;
  std::vector<chunk_ptr> chunks_;
  uint32_t slots_used_ = 0;
  std::vector<uint32_t> free_;
  std::vector<spare_block> spare_;
  /// The floats of entries whose key fits their slot but not with the
  /// floats (the floats alone in `heap`), in one region of huge pages as
  /// large as the bound, reserved when the cache starts (from
  /// `huge_region_min` up) and committed as blocks are carved from it: the
  /// blocks live as long as their entries, and apart from them the request
  /// path's short-lived allocations find the allocator's heap unfragmented
  /// (docs/caching.md, "Memory"). The region holds blocks of one size, that
  /// of the first vector stored in it; an evicted entry's block goes to the
  /// free list for the next entry of that size, and vectors of other sizes
  /// come from the allocator. When another size asks while a quarter of
  /// the region lies free (the dimensions changed, or the region's size
  /// lost its share of the store to another), the region is taken over:
  /// no block of it is handed out, the entries still in it are evicted a
  /// few slots at a time as blocks are asked for, and when the last block
  /// is back the region serves whatever size asks next. Free blocks that
  /// only their own size can use thus never hold much more than a quarter
  /// of the bound for long, whatever sizes come and go.
  huge_region blocks_;
  std::size_t blocks_carved_ = 0;
  std::size_t blocks_in_use_ = 0;
  /// The size of the region's blocks (0: none carved).
  uint32_t blocks_dims_ = 0;
  std::vector<unsigned char*> free_blocks_;
  bool blocks_taking_over_ = false;
  /// The next slot a takeover looks at.
  uint32_t blocks_cursor_ = 0;
  /// Slots a takeover looks at per block asked for.
  static constexpr uint32_t takeover_step = 32;
  /// Evicts the stored entries with a block of the region among the next
  /// `takeover_step` slots.
  void continue_takeover();
  std::vector<bucket> index_;
  std::size_t index_count_ = 0;
  frequency_sketch sketch_;
  cache_counters counters_;
  uint64_t random_ = 0x9e3779b97f4a7c15ull;
};

} // namespace embedrt::detail
