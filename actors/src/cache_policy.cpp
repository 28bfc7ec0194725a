#include "cache_policy.hpp"

#include <algorithm>
#include <cstring>

namespace embedrt::detail {

namespace {

void append_header(std::string& key, std::string_view model, int32_t dimensions,
                   char kind) {
  key.append(model);
  key.push_back('\0');
  auto d = static_cast<uint32_t>(dimensions);
  for (int i = 0; i < 4; ++i)
    key.push_back(static_cast<char>((d >> (8 * i)) & 0xff));
  key.push_back(kind);
}

/// SplitMix64's finalizer: spreads a hash over all bits.
uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

std::size_t next_pow2(std::size_t n) {
  std::size_t p = 1;
  while (p < n)
    p <<= 1;
  return p;
}

} // namespace

std::string cache_key(std::string_view model, int32_t dimensions,
                      std::string_view text) {
  std::string key;
  key.reserve(model.size() + 6 + text.size());
  append_header(key, model, dimensions, 't');
  key.append(text);
  return key;
}

std::string cache_key(std::string_view model, int32_t dimensions,
                      const std::vector<int32_t>& token_ids) {
  std::string key;
  key.reserve(model.size() + 6 + 4 * token_ids.size());
  append_header(key, model, dimensions, 'i');
  for (auto id : token_ids) {
    auto u = static_cast<uint32_t>(id);
    for (int i = 0; i < 4; ++i)
      key.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
  }
  return key;
}

uint64_t cache_hash(std::string_view key) {
  return std::hash<std::string_view>{}(key);
}

// -- frequency_sketch ---------------------------------------------------------

frequency_sketch::frequency_sketch(std::size_t expected_entries) {
  ensure_capacity(expected_entries);
}

void frequency_sketch::ensure_capacity(std::size_t entries) {
  auto width = next_pow2(std::max<std::size_t>(entries, 64));
  if (width <= mask_ + 1 && !table_.empty())
    return;
  table_.assign(4 * width, 0);
  mask_ = width - 1;
  additions_ = 0;
  sample_size_ = 10 * width;
}

std::size_t frequency_sketch::index(uint64_t hash, int row) const {
  auto h = mix(hash + static_cast<uint64_t>(row + 1) * 0x9e3779b97f4a7c15ULL);
  return static_cast<std::size_t>(row) * (mask_ + 1) + (h & mask_);
}

void frequency_sketch::increment(uint64_t hash) {
  bool added = false;
  for (int row = 0; row < 4; ++row) {
    auto& c = table_[index(hash, row)];
    if (c < 15) {
      ++c;
      added = true;
    }
  }
  if (added && ++additions_ >= sample_size_)
    age();
}

uint32_t frequency_sketch::frequency(uint64_t hash) const {
  uint32_t f = 15;
  for (int row = 0; row < 4; ++row)
    f = std::min<uint32_t>(f, table_[index(hash, row)]);
  return f;
}

void frequency_sketch::age() {
  for (auto& c : table_)
    c >>= 1;
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
  if (policy_ == eviction_policy::lru)
    window_max_ = max_bytes;
}

embedding_cache::list& embedding_cache::list_of(region r) {
  return r == region::window   ? window_
      : r == region::probation ? probation_
                               : protected_;
}

std::size_t& embedding_cache::bytes_of(region r) {
  return r == region::window   ? window_bytes_
      : r == region::probation ? probation_bytes_
                               : protected_bytes_;
}

const std::vector<float>* embedding_cache::get(std::string_view key,
                                               uint64_t hash,
                                               clock::time_point now) {
  if (policy_ == eviction_policy::tinylfu)
    sketch_.increment(hash);
  auto i = index_.find(cache_key_ref{key, hash});
  if (i == index_.end()) {
    ++counters_.misses;
    return nullptr;
  }
  auto it = i->second;
  if (it->expires <= now) {
    ++counters_.expirations;
    ++counters_.misses;
    remove(it);
    return nullptr;
  }
  ++counters_.hits;
  on_hit(it);
  return &it->vec;
}

void embedding_cache::on_hit(iter it) {
  switch (it->where) {
    case region::window: window_.splice(window_.begin(), window_, it); break;
    case region::probation:
      // Asked again while on probation: protected from now on.
      probation_bytes_ -= it->bytes;
      protected_bytes_ += it->bytes;
      it->where = region::protect;
      protected_.splice(protected_.begin(), probation_, it);
      rebalance_protected();
      break;
    case region::protect:
      protected_.splice(protected_.begin(), protected_, it);
      break;
  }
}

/// The protected segment over its share demotes its least recent entries
/// to the front of probation.
void embedding_cache::rebalance_protected() {
  while (protected_bytes_ > protected_max_ && !protected_.empty()) {
    auto last = std::prev(protected_.end());
    protected_bytes_ -= last->bytes;
    probation_bytes_ += last->bytes;
    last->where = region::probation;
    probation_.splice(probation_.begin(), protected_, last);
  }
}

void embedding_cache::remove(iter it) {
  index_.erase(cache_key_ref{it->key, it->hash});
  bytes_of(it->where) -= it->bytes;
  list_of(it->where).erase(it);
}

void embedding_cache::evict(iter it) {
  ++counters_.evictions;
  remove(it);
}

void embedding_cache::put(std::string key, uint64_t hash,
                          std::vector<float> vec, clock::time_point now) {
  auto bytes = key.size() + vec.size() * sizeof(float) + cache_entry_overhead;
  auto expires = ttl_.count() > 0 ? now + ttl_ : clock::time_point::max();
  if (auto i = index_.find(cache_key_ref{key, hash}); i != index_.end())
    remove(i->second);
  if (bytes > max_bytes_) {
    ++counters_.too_large;
    return;
  }
  node n;
  n.hash = hash;
  n.key = std::move(key);
  n.vec = std::move(vec);
  n.bytes = bytes;
  n.expires = expires;
  window_.push_front(std::move(n));
  window_bytes_ += bytes;
  index_.emplace(cache_key_ref{window_.front().key, hash}, window_.begin());
  if (policy_ == eviction_policy::tinylfu)
    sketch_.ensure_capacity(index_.size());
  drain_window();
}

/// Entries pushed out of the window are candidates for the main space.
void embedding_cache::drain_window() {
  while (window_bytes_ > window_max_ && !window_.empty()) {
    auto last = std::prev(window_.end());
    if (policy_ == eviction_policy::lru) {
      evict(last);
      continue;
    }
    window_bytes_ -= last->bytes;
    probation_bytes_ += last->bytes;
    last->where = region::probation;
    probation_.splice(probation_.begin(), window_, last);
    admit(last);
  }
}

/// The candidate (at the front of probation) stays only if it is asked for
/// more often than each victim it would push out (probation's least recent
/// first, then protected's); otherwise the candidate goes.
void embedding_cache::admit(iter candidate) {
  auto main_max = max_bytes_ - window_max_;
  while (probation_bytes_ + protected_bytes_ > main_max) {
    iter victim;
    if (probation_.size() > 1 || protected_.empty())
      victim = std::prev(probation_.end());
    else
      victim = std::prev(protected_.end());
    if (victim == candidate) {
      evict(candidate);
      return;
    }
    if (sketch_.frequency(candidate->hash) > sketch_.frequency(victim->hash)) {
      evict(victim);
    } else {
      evict(candidate);
      return;
    }
  }
}

} // namespace embedrt::detail
