#include "cache_policy.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>

namespace embedrt::detail {

namespace {

/// Sizes `key` for the header and `body` bytes after it (its memory
/// reused: a key of the same length as the last one written into this
/// string costs no allocation and no fill) and writes the header: the
/// model, a zero byte, the dimensions (4 bytes, little-endian) and `kind`.
/// Returns where the body goes.
char* write_header(std::string& key, std::string_view model, int32_t dimensions,
                   char kind, std::size_t body) {
  key.resize(model.size() + 6 + body);
  auto* p = key.data();
  if (!model.empty())
    std::memcpy(p, model.data(), model.size());
  p += model.size();
  auto d = static_cast<uint32_t>(dimensions);
  *p++ = '\0';
  for (int i = 0; i < 4; ++i)
    *p++ = static_cast<char>((d >> (8 * i)) & 0xff);
  *p++ = kind;
  return p;
}

std::size_t next_pow2(std::size_t n) {
  std::size_t p = 1;
  while (p < n)
    p <<= 1;
  return p;
}

} // namespace

void cache_key(std::string& out, std::string_view model, int32_t dimensions,
               std::string_view text) {
  auto* p = write_header(out, model, dimensions, 't', text.size());
  if (!text.empty())
    std::memcpy(p, text.data(), text.size());
}

void cache_key(std::string& out, std::string_view model, int32_t dimensions,
               const std::vector<int32_t>& token_ids) {
  auto* p = write_header(out, model, dimensions, 'i', 4 * token_ids.size());
  for (auto id : token_ids) {
    auto u = static_cast<uint32_t>(id);
    for (int i = 0; i < 4; ++i)
      *p++ = static_cast<char>((u >> (8 * i)) & 0xff);
  }
}

std::string cache_key(std::string_view model, int32_t dimensions,
                      std::string_view text) {
  std::string key;
  cache_key(key, model, dimensions, text);
  return key;
}

std::string cache_key(std::string_view model, int32_t dimensions,
                      const std::vector<int32_t>& token_ids) {
  std::string key;
  cache_key(key, model, dimensions, token_ids);
  return key;
}

bool cache_key_is_text(std::string_view key, std::string_view text) {
  // model, '\0', 4 bytes of dimensions, 't', the text.
  auto n = text.size();
  return key.size() >= n + 6 && key[key.size() - n - 1] == 't'
      && key[key.size() - n - 6] == '\0' && key.substr(key.size() - n) == text;
}

namespace {

// wyhash (Wang Yi's, final version 4; public domain / The Unlicense): 16
// bytes per 64 x 64 -> 128-bit multiplication, about half the instructions
// of libstdc++'s MurmurHash2 on a 57-byte key (64 against 120). Not seeded:
// the hash never leaves the process and decides nothing an attacker could
// exploit beyond longer probes (the index is kept at most half full).

uint64_t wymix(uint64_t a, uint64_t b) {
  auto r = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

uint64_t read8(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

uint64_t read4(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

constexpr uint64_t wy0 = 0x2d358dccaa6c78a5ULL;
constexpr uint64_t wy1 = 0x8bb84b93962eacc9ULL;
constexpr uint64_t wy2 = 0x4b33a62ed433d4a3ULL;
constexpr uint64_t wy3 = 0x4d5a2da51de1aa47ULL;

} // namespace

uint64_t cache_hash(std::string_view key) {
  const auto* p = reinterpret_cast<const unsigned char*>(key.data());
  auto len = key.size();
  uint64_t seed = wymix(wy0, wy1);
  uint64_t a = 0;
  uint64_t b = 0;
  if (len <= 16) {
    if (len >= 4) {
      auto off = (len >> 3) << 2;
      a = (read4(p) << 32) | read4(p + off);
      b = (read4(p + len - 4) << 32) | read4(p + len - 4 - off);
    } else if (len > 0) {
      a = (static_cast<uint64_t>(p[0]) << 16)
          | (static_cast<uint64_t>(p[len >> 1]) << 8) | p[len - 1];
    }
  } else {
    auto i = len;
    if (i >= 48) {
      auto see1 = seed;
      auto see2 = seed;
      do {
        seed = wymix(read8(p) ^ wy1, read8(p + 8) ^ seed);
        see1 = wymix(read8(p + 16) ^ wy2, read8(p + 24) ^ see1);
        see2 = wymix(read8(p + 32) ^ wy3, read8(p + 40) ^ see2);
        p += 48;
        i -= 48;
      } while (i >= 48);
      seed ^= see1 ^ see2;
    }
    while (i > 16) {
      seed = wymix(read8(p) ^ wy1, read8(p + 8) ^ seed);
      i -= 16;
      p += 16;
    }
    a = read8(p + i - 16);
    b = read8(p + i - 8);
  }
  a ^= wy1;
  b ^= seed;
  auto r = static_cast<unsigned __int128>(a) * b;
  a = static_cast<uint64_t>(r);
  b = static_cast<uint64_t>(r >> 64);
  return wymix(a ^ wy0 ^ len, b ^ wy1);
}

// -- frequency_sketch ---------------------------------------------------------

frequency_sketch::frequency_sketch(std::size_t expected_entries) {
  grow(expected_entries);
}

void frequency_sketch::grow(std::size_t entries) {
  auto width = next_pow2(std::max<std::size_t>(entries, 64));
  table_.assign(4 * width + 63, 0);
  auto addr = reinterpret_cast<std::uintptr_t>(table_.data());
  base_ = table_.data() + ((64 - addr % 64) % 64);
  mask_ = width - 1;
  blocks_mask_ = width / 16 - 1;
  additions_ = 0;
  sample_size_ = 10 * width;
}

void frequency_sketch::increment(uint64_t hash) {
  auto* block = block_of(hash);
  bool added = false;
  for (int row = 0; row < 4; ++row) {
    auto& c = block[counter(hash, row)];
    if (c < 15) {
      ++c;
      added = true;
    }
  }
  if (added && ++additions_ >= sample_size_)
    age();
}

uint32_t frequency_sketch::frequency(uint64_t hash) const {
  const auto* block = block_of(hash);
  uint32_t f = 15;
  for (int row = 0; row < 4; ++row)
    f = std::min<uint32_t>(f, block[counter(hash, row)]);
  return f;
}

void frequency_sketch::age() {
  for (auto& c : table_)
    c >>= 1; // the bytes outside the aligned range are 0 and stay 0
  additions_ /= 2;
}

// -- embedding_cache ----------------------------------------------------------

embedding_cache::embedding_cache(std::size_t max_bytes,
                                 std::chrono::milliseconds ttl,
                                 eviction_policy policy)
    : max_bytes_(max_bytes),
      // Caffeine's split: 1 % window, the main space 20 % probation and
      // 80 % protected.
      window_max_(std::max<std::size_t>(max_bytes / 100, 1)),
      protected_max_((max_bytes - window_max_) / 5 * 4),
      ttl_(ttl),
      policy_(policy) {
  // An entry's slot and its index buckets (2 to 4: the index is kept
  // between a quarter and half full) are what the overhead counts.
  static_assert(sizeof(entry) + 4 * sizeof(bucket) <= cache_entry_overhead);
  static_assert(offsetof(entry, tag) + sizeof(entry::tag) <= 32);
  if (policy_ == eviction_policy::lru)
    window_max_ = max_bytes;
  index_.resize(64);
  // The chunks a full cache needs, in one region of huge pages: a miss
  // reads its candidate's and victim's slots at random, and in 4 KiB pages
  // those reads miss the TLB (docs/caching.md, "Memory").
  auto max_chunks
      = (max_bytes / cache_entry_overhead + chunk_size - 1) / chunk_size;
  if (max_chunks * sizeof(chunk) >= huge_region_min) {
    region_ = huge_region{max_chunks * sizeof(chunk)};
    region_chunks_ = region_.size() / sizeof(chunk);
  }
  // Room for as many floats as the bound holds (only address space until
  // used: a cache of vectors that fit their slots never touches it).
  if (max_bytes >= huge_region_min)
    blocks_ = huge_region{max_bytes};
}

embedding_cache::~embedding_cache() {
  // The region's blocks go with the region, not to the allocator.
  if (blocks_.data())
    for (uint32_t slot = 0; slot < slots_used_; ++slot)
      if (auto& e = at(slot); in_blocks(e.heap.get()))
        static_cast<void>(e.heap.release());
}

inline embedding_cache::lru_list& embedding_cache::list_of(region r) {
  return r == region::window   ? window_
      : r == region::probation ? probation_
                               : protected_;
}

inline void embedding_cache::push_front(region r, uint32_t slot) {
  auto& l = list_of(r);
  auto& e = at(slot);
  e.where = r;
  e.prev = npos;
  e.next = l.head;
  if (l.head != npos)
    at(l.head).prev = slot;
  else
    l.tail = slot;
  l.head = slot;
  ++l.count;
  l.bytes += e.bytes;
}

inline void embedding_cache::unlink(uint32_t slot) {
  auto& e = at(slot);
  auto& l = list_of(e.where);
  if (e.prev != npos)
    at(e.prev).next = e.next;
  else
    l.head = e.next;
  if (e.next != npos)
    at(e.next).prev = e.prev;
  else
    l.tail = e.prev;
  e.prev = e.next = npos;
  --l.count;
  l.bytes -= e.bytes;
}

uint32_t embedding_cache::new_slot() {
  if (!free_.empty()) {
    auto s = free_.back();
    free_.pop_back();
    return s;
  }
  if ((slots_used_ & (chunk_size - 1)) == 0) {
    auto k = chunks_.size();
    chunks_.reserve(k + 1);
    if (k < region_chunks_)
      chunks_.emplace_back(new (region_.data() + k * sizeof(chunk)) chunk(),
                           chunk_deleter{true});
    else
      chunks_.push_back(chunk_ptr{new chunk(), chunk_deleter{false}});
  }
  return slots_used_++;
}

void embedding_cache::free_slot(uint32_t slot) {
  auto& e = at(slot);
  // A large entry's memory goes now, not when the slot is reused: a floats
  // block to the spares, a key's block back to the allocator.
  if (e.heap && entry::floats_apart(e.key_len, e.dims))
    keep_block(std::move(e.heap), e.dims);
  e.heap.reset();
  e.key_len = 0;
  e.dims = 0;
  e.where = region::free;
  e.bytes = 0;
  if (++e.generation == 0)
    e.generation = 1;
  free_.push_back(slot);
}

unsigned char* embedding_cache::region_block(uint32_t dims) {
  if (!blocks_.data())
    return nullptr;
  if (!blocks_taking_over_ && blocks_dims_ != 0 && dims != blocks_dims_
      && region_free_bytes() >= blocks_.size() / 4) {
    blocks_taking_over_ = true;
    blocks_cursor_ = 0;
  }
  if (blocks_taking_over_)
    continue_takeover(); // its last eviction may end it
  if (blocks_taking_over_)
    return nullptr;
  if (blocks_dims_ == 0)
    blocks_dims_ = dims;
  if (dims != blocks_dims_)
    return nullptr;
  unsigned char* p = nullptr;
  if (!free_blocks_.empty()) {
    p = free_blocks_.back();
    free_blocks_.pop_back();
  } else if (auto size = block_bytes(dims);
             blocks_carved_ + size <= blocks_.size()) {
    p = blocks_.data() + blocks_carved_;
    blocks_carved_ += size;
  } else {
    return nullptr;
  }
  ++blocks_in_use_;
  return p;
}

embedding_cache::heap_ptr embedding_cache::take_block(uint32_t dims) {
  if (auto* p = region_block(dims))
    return heap_ptr{p};
  for (auto i = spare_.size(); i-- > 0;) {
    if (spare_[i].dims != dims)
      continue;
    auto block = std::move(spare_[i].block);
    spare_[i] = std::move(spare_.back());
    spare_.pop_back();
    return block;
  }
  return heap_ptr{new unsigned char[dims * sizeof(float)]};
}

void embedding_cache::continue_takeover() {
  // A few slots per block asked for, so that no fill stalls the service
  // for a scan of the whole store. Only stored entries hold a block (one in
  // flight has no floats yet, the one being stored among them), and none is
  // out of its list while a fill stores. No block of the region is handed
  // out meanwhile, so one pass finds them all.
  for (uint32_t n = 0; n < takeover_step && blocks_in_use_ > 0; ++n) {
    if (blocks_cursor_ >= slots_used_)
      blocks_cursor_ = 0;
    auto slot = blocks_cursor_++;
    if (in_blocks(at(slot).heap.get()))
      evict(slot);
  }
}

std::size_t embedding_cache::spare_bytes() const {
  std::size_t sum = 0;
  for (const auto& s : spare_)
    sum += s.dims * sizeof(float);
  return sum;
}

void embedding_cache::keep_block(heap_ptr block, uint32_t dims) {
  if (in_blocks(block.get())) {
    auto* p = block.release();
    if (--blocks_in_use_ == 0) {
      // Every block is back: the region starts over, for whatever size
      // comes next.
      blocks_carved_ = 0;
      blocks_dims_ = 0;
      blocks_taking_over_ = false;
      free_blocks_.clear();
      return;
    }
    if (!blocks_taking_over_)
      free_blocks_.push_back(p);
    return;
  }
  auto size = dims * sizeof(float);
  if (size > max_bytes_ / 64)
    return;
  // Full: the oldest spare goes (its dimensions may be out of use).
  while (!spare_.empty()
         && (spare_.size() >= max_spare_blocks
             || spare_bytes() + size > max_bytes_ / 64))
    spare_.erase(spare_.begin());
  spare_.push_back(spare_block{dims, std::move(block)});
}

void embedding_cache::prefetch(uint64_t hash) const {
  __builtin_prefetch(index_.data()
                     + (static_cast<std::size_t>(hash) & (index_.size() - 1)));
  if (policy_ == eviction_policy::tinylfu)
    sketch_.prefetch(hash);
}

void embedding_cache::prefetch_ticket(uint64_t ticket) const {
  auto slot = static_cast<uint32_t>(ticket & 0xffffffffu);
  if (slot < slots_used_)
    __builtin_prefetch(&at(slot));
}

std::size_t embedding_cache::find_pos(std::string_view key,
                                      uint64_t hash) const {
  auto mask = index_.size() - 1;
  for (auto pos = static_cast<std::size_t>(hash) & mask;;
       pos = (pos + 1) & mask) {
    const auto& b = index_[pos];
    if (b.slot == npos)
      return not_found;
    if (b.hash_lo == low(hash) && at(b.slot).key() == key)
      return pos;
  }
}

std::size_t embedding_cache::slot_pos(uint32_t slot) const {
  auto mask = index_.size() - 1;
  for (auto pos = static_cast<std::size_t>(at(slot).hash) & mask;;
       pos = (pos + 1) & mask) {
    const auto& b = index_[pos];
    if (b.slot == slot)
      return pos;
    if (b.slot == npos)
      return not_found;
  }
}

void embedding_cache::index_insert(uint64_t hash, uint32_t slot) {
  // At most half full: short probes.
  if (2 * (index_count_ + 1) > index_.size())
    grow_index();
  auto mask = index_.size() - 1;
  auto pos = static_cast<std::size_t>(hash) & mask;
  while (index_[pos].slot != npos)
    pos = (pos + 1) & mask;
  index_[pos] = bucket{low(hash), slot};
  ++index_count_;
}

void embedding_cache::grow_index() {
  std::vector<bucket> old(index_.size() * 2);
  old.swap(index_);
  auto mask = index_.size() - 1;
  for (const auto& b : old) {
    if (b.slot == npos)
      continue;
    auto pos = static_cast<std::size_t>(b.hash_lo) & mask;
    while (index_[pos].slot != npos)
      pos = (pos + 1) & mask;
    index_[pos] = b;
  }
}

/// Backward-shift deletion: the entries after the hole that may move into
/// it do, so that no probe ever stops early and no tombstones pile up.
void embedding_cache::index_erase(std::size_t pos) {
  auto mask = index_.size() - 1;
  auto hole = pos;
  for (auto j = (hole + 1) & mask; index_[j].slot != npos; j = (j + 1) & mask) {
    auto home = static_cast<std::size_t>(index_[j].hash_lo) & mask;
    // The entry at j may fill the hole unless its home lies cyclically in
    // (hole, j].
    bool stays
        = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (stays)
      continue;
    index_[hole] = index_[j];
    hole = j;
  }
  index_[hole] = bucket{};
  --index_count_;
}

cached_floats embedding_cache::get(std::string_view key, uint64_t hash,
                                   clock::time_point now) {
  if (policy_ == eviction_policy::tinylfu)
    sketch_.increment(hash);
  auto pos = find_pos(key, hash);
  if (pos == not_found) {
    ++counters_.misses;
    return {};
  }
  auto slot = index_[pos].slot;
  auto& e = at(slot);
  if (e.where == region::in_flight) {
    ++counters_.misses;
    return {};
  }
  if (e.expires <= now) {
    ++counters_.expirations;
    ++counters_.misses;
    remove(slot);
    return {};
  }
  ++counters_.hits;
  on_hit(slot);
  return e.floats();
}

void embedding_cache::reserve(uint32_t slot, std::string_view key,
                              uint64_t hash, uint32_t tag) {
  auto& e = at(slot);
  if (key.size() > inline_bytes)
    e.heap = heap_ptr{new unsigned char[key.size()]};
  std::memcpy(e.heap ? e.heap.get() : e.small, key.data(), key.size());
  e.key_len = static_cast<uint32_t>(key.size());
  e.dims = 0;
  e.hash = hash;
  e.tag = tag;
  e.where = region::in_flight;
  index_insert(hash, slot);
  ++in_flight_;
}

cache_reservation embedding_cache::find_or_reserve(std::string_view key,
                                                   uint64_t hash, uint32_t tag,
                                                   clock::time_point now) {
  if (policy_ == eviction_policy::tinylfu)
    sketch_.increment(hash);
  cache_reservation r;
  auto pos = find_pos(key, hash);
  if (pos != not_found) {
    auto slot = index_[pos].slot;
    auto& e = at(slot);
    if (e.where == region::in_flight) {
      ++counters_.misses;
      r.found = cache_find::in_flight;
      r.ticket = ticket_of(slot, e.generation);
      r.tag = e.tag;
      return r;
    }
    if (e.expires > now) {
      ++counters_.hits;
      on_hit(slot);
      r.found = cache_find::hit;
      r.vec = e.floats();
      return r;
    }
    ++counters_.expirations;
    remove(slot);
  }
  ++counters_.misses;
  auto slot = new_slot();
  reserve(slot, key, hash, tag);
  r.found = cache_find::reserved;
  r.ticket = ticket_of(slot, at(slot).generation);
  return r;
}

bool embedding_cache::fill(uint64_t ticket, const float* data, std::size_t size,
                           clock::time_point now) {
  auto slot = live_ticket(ticket);
  if (slot == npos)
    return false;
  store(slot, data, size, now);
  return true;
}

bool embedding_cache::abandon(uint64_t ticket) {
  auto slot = live_ticket(ticket);
  if (slot == npos)
    return false;
  remove(slot);
  return true;
}

std::optional<std::string_view> embedding_cache::key_of(uint64_t ticket) const {
  auto slot = live_ticket(ticket);
  if (slot == npos)
    return std::nullopt;
  return at(slot).key();
}

std::optional<uint32_t> embedding_cache::tag_of(uint64_t ticket) const {
  auto slot = live_ticket(ticket);
  if (slot == npos)
    return std::nullopt;
  return at(slot).tag;
}

void embedding_cache::on_hit(uint32_t slot) {
  auto& e = at(slot);
  switch (e.where) {
    case region::window:
      unlink(slot);
      push_front(region::window, slot);
      break;
    case region::probation:
      // Asked again while on probation: protected from now on.
      unlink(slot);
      push_front(region::protect, slot);
      rebalance_protected();
      break;
    case region::protect:
      unlink(slot);
      push_front(region::protect, slot);
      break;
    case region::free:
    case region::in_flight:
    case region::detached: break;
  }
}

/// The protected segment over its share demotes its least recent entries
/// to the front of probation.
void embedding_cache::rebalance_protected() {
  while (protected_.bytes > protected_max_ && protected_.tail != npos) {
    auto last = protected_.tail;
    unlink(last);
    push_front(region::probation, last);
  }
}

void embedding_cache::remove(uint32_t slot) {
  auto& e = at(slot);
  // Found by slot: no key compare, whose bytes may be out of cache.
  if (auto pos = slot_pos(slot); pos != not_found)
    index_erase(pos);
  if (e.where == region::in_flight)
    --in_flight_;
  else if (e.where != region::detached)
    unlink(slot);
  free_slot(slot);
}

void embedding_cache::evict(uint32_t slot) {
  ++counters_.evictions;
  remove(slot);
}

void embedding_cache::store(uint32_t slot, const float* data, std::size_t size,
                            clock::time_point now) {
  auto& e = at(slot);
  auto bytes = e.key_len + size * sizeof(float) + cache_entry_overhead;
  if (bytes > max_bytes_ || bytes > UINT32_MAX) {
    ++counters_.too_large;
    remove(slot);
    return;
  }
  --in_flight_;
  e.dims = static_cast<uint32_t>(size);
  if (e.key_len > inline_bytes) {
    // Key and floats in one allocation of their own.
    heap_ptr block{new unsigned char[entry::floats_offset(e.key_len)
                                     + size * sizeof(float)]};
    std::memcpy(block.get(), e.heap.get(), e.key_len);
    e.heap = std::move(block);
  } else if (entry::floats_apart(e.key_len, size)) {
    e.heap = take_block(e.dims);
  }
  if (size > 0)
    std::memcpy(e.floats_at(), data, size * sizeof(float));
  e.bytes = static_cast<uint32_t>(bytes);
  e.expires = ttl_.count() > 0 ? now + ttl_ : clock::time_point::max();
  // A stored entry's ticket is stale from now on.
  if (++e.generation == 0)
    e.generation = 1;
  push_front(region::window, slot);
  if (policy_ == eviction_policy::tinylfu)
    sketch_.ensure_capacity(entries());
  drain_window();
}

void embedding_cache::put(std::string_view key, uint64_t hash,
                          const std::vector<float>& vec,
                          clock::time_point now) {
  if (auto pos = find_pos(key, hash); pos != not_found)
    remove(index_[pos].slot);
  auto slot = new_slot();
  reserve(slot, key, hash, 0);
  store(slot, vec.data(), vec.size(), now);
}

/// Entries pushed out of the window are candidates for the main space.
void embedding_cache::drain_window() {
  while (window_.bytes > window_max_ && window_.tail != npos) {
    auto last = window_.tail;
    if (policy_ == eviction_policy::lru) {
      evict(last);
      continue;
    }
    unlink(last);
    at(last).where = region::detached;
    if (admit(last))
      push_front(region::probation, last);
    else
      evict(last);
  }
  if (policy_ == eviction_policy::tinylfu)
    prefetch_admission();
}

void embedding_cache::prefetch_admission() const {
  // The window's tail (the next candidate) and probation's (the next
  // victim) were just written by the unlinks before them, or were this
  // admission's survivors: their hashes are at hand, their counters and
  // index buckets are not.
  for (auto slot : {window_.tail, probation_.tail}) {
    if (slot == npos)
      continue;
    const auto& e = at(slot);
    sketch_.prefetch(e.hash);
    __builtin_prefetch(
        index_.data()
        + (static_cast<std::size_t>(e.hash) & (index_.size() - 1)));
    if (e.prev != npos)
      __builtin_prefetch(&at(e.prev));
  }
}

/// The candidate (out of the window, in no list yet) enters probation only
/// if it is asked for more often than each victim it would push out
/// (probation's least recent first, then protected's), which go; otherwise
/// the candidate goes (false). A warm candidate (asked for at least
/// `admit_warm` times) that loses is admitted all the same 1 time in 128, as
/// in Caffeine: the sketch's counters stop at 15, so a popular input can tie
/// with its victims for as long as they stay popular too (or an attacker
/// keeps their counters up with colliding inputs) and would never get in.
/// Most candidates of a stream of new inputs lose: deciding before the
/// candidate is linked into probation spares them a link and an unlink.
bool embedding_cache::admit(uint32_t candidate) {
  auto main_max = max_bytes_ - window_max_;
  auto bytes = at(candidate).bytes;
  if (probation_.bytes + protected_.bytes + bytes <= main_max)
    return true;
  auto candidate_freq = sketch_.frequency(at(candidate).hash);
  bool lucky = false;
  while (probation_.bytes + protected_.bytes + bytes > main_max) {
    uint32_t victim = probation_.count > 0 ? probation_.tail : protected_.tail;
    if (victim == npos)
      return false; // the candidate alone is larger than the main space
    if (!lucky && candidate_freq <= sketch_.frequency(at(victim).hash)) {
      // One coin per candidate, tossed when it first loses; a lucky one
      // pushes out as many victims as it needs.
      lucky = candidate_freq >= admit_warm && (next_random() & 127) == 0;
      if (!lucky)
        return false;
    }
    evict(victim);
  }
  return true;
}

} // namespace embedrt::detail
