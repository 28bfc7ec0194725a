#include "service_cache.hpp"

#include <algorithm>
#include <caf/sec.hpp>
#include <stdexcept>

namespace embedrt::detail {

namespace {

/// Filled vectors waiting for the disk writer at most; more are not
/// persisted (counted as persistent errors).
constexpr std::size_t max_write_backlog = 4096;

/// The largest buffer kept for reuse (bytes): 16 KiB of floats, 8 KiB of
/// tickets. The pools hold many small ones (`spare_pool`): the answers of a
/// batched upstream call come back together, so with 1,000 callers of one
/// text each about 60 settles arrive at once and as many lookups follow,
/// and a pool of a few would send most of them to the allocator.
constexpr std::size_t max_spare_bytes = 16384;

} // namespace

// -- the disk actor -----------------------------------------------------------

disk_actor::behavior_type disk_fn(disk_actor::stateful_pointer<disk_state> self,
                                  std::shared_ptr<persistent_store> store,
                                  milliseconds ttl) {
  self->state.store = std::move(store);
  self->state.ttl = ttl;
  return {
      [self](disk_get_atom, const std::vector<std::string>& keys)
          -> caf::result<cache_vectors> {
        cache_vectors out;
        std::string err;
        if (!self->state.store->get(keys, self->state.ttl, out, err))
          return caf::make_error(caf::sec::runtime_error, std::move(err));
        return out;
      },
      [self](disk_put_atom, const std::vector<std::string>& keys,
             const cache_vectors& vecs) -> caf::result<int64_t> {
        std::string err;
        if (!self->state.store->put(keys, vecs, err))
          return caf::make_error(caf::sec::runtime_error, std::move(err));
        return static_cast<int64_t>(keys.size());
      },
  };
}

// -- keys ---------------------------------------------------------------------

void make_cache_keys(const embed_request& req, const std::string& model,
                     std::vector<std::string>& keys,
                     std::vector<uint64_t>& hashes) {
  auto dims = req.dimensions;
  // The strings are the last request's, their memory reused.
  hashes.clear();
  if (!req.token_inputs.empty()) {
    keys.resize(req.token_inputs.size());
    for (std::size_t i = 0; i < keys.size(); ++i)
      cache_key(keys[i], model, dims, req.token_inputs[i]);
  } else {
    keys.resize(req.inputs.size());
    for (std::size_t i = 0; i < keys.size(); ++i)
      cache_key(keys[i], model, dims, req.inputs[i]);
  }
  hashes.reserve(keys.size());
  for (const auto& key : keys)
    hashes.push_back(cache_hash(key));
}

void trim_cache_keys(std::vector<std::string>& keys) {
  if (keys.size() > 64)
    keys.clear();
  for (auto& key : keys)
    if (key.capacity() > 4096)
      std::string{}.swap(key);
}

// -- the cache ----------------------------------------------------------------

service_cache::service_cache(const cache_config& cfg,
                             std::shared_ptr<cache_disk> disk, uint64_t epoch,
                             std::string crash_marker)
    : epoch_(epoch),
      crash_marker_(std::move(crash_marker)),
      mem_(cfg.max_bytes, cfg.ttl),
      disk_(std::move(disk)) {
  // nop
}

/// The clock reading a lookup or fill compares expiry times with: none
/// without a TTL (nothing expires), so a cache without one reads no clock.
embedding_cache::clock::time_point service_cache::expiry_now() const {
  return mem_.expires() ? embedding_cache::clock::now()
                        : embedding_cache::clock::time_point{};
}

/// The record a new reservation will take (not taken yet: a lookup that
/// hits or joins a flight leaves it free).
uint32_t service_cache::next_flight() const {
  if (!free_flights_.empty())
    return free_flights_.back();
  return static_cast<uint32_t>(flights_.size());
}

service_cache::flight& service_cache::take_flight(uint32_t tag) {
  if (!free_flights_.empty() && free_flights_.back() == tag)
    free_flights_.pop_back();
  else
    flights_.emplace_back();
  return flights_[tag];
}

void service_cache::free_flight(uint32_t tag) {
  auto& f = flights_[tag];
  f.ticket = 0;
  f.owner = nullptr;
  f.waiters.clear();
  free_flights_.push_back(tag);
}

void service_cache::queue_write(uint64_t ticket, const float* data,
                                std::size_t size) {
  if (!disk_ || !disk_->actor)
    return;
  if (disk_->keys.size() >= max_write_backlog) {
    ++counters_.persistent_errors;
    return;
  }
  disk_->keys.emplace_back(*mem_.key_of(ticket));
  disk_->vecs.emplace_back(data, data + size);
}

/// A ticket's vector arrived (from its owner or the store): waiters get it,
/// the cache keeps it (the entry in flight becomes a stored one). False if
/// the ticket is stale.
bool service_cache::complete(uint64_t ticket, const float* data,
                             std::size_t size, bool persist,
                             embedding_cache::clock::time_point now) {
  auto tag = mem_.tag_of(ticket);
  if (!tag)
    return false;
  auto& f = flights_[*tag];
  if (persist)
    queue_write(ticket, data, size);
  for (auto& w : f.waiters)
    notices_.push_back({std::move(w), ticket, cache_notice::kind::filled,
                        std::vector<float>(data, data + size)});
  free_flight(*tag);
  mem_.fill(ticket, data, size, now);
  return true;
}

/// The owner gave the ticket up: the first waiter owns it now.
void service_cache::release(uint64_t ticket) {
  auto tag = mem_.tag_of(ticket);
  if (!tag)
    return;
  auto& f = flights_[*tag];
  if (f.waiters.empty()) {
    free_flight(*tag);
    mem_.abandon(ticket);
    return;
  }
  f.owner = std::move(f.waiters.front());
  f.waiters.erase(f.waiters.begin());
  notices_.push_back({f.owner, ticket, cache_notice::kind::owner, {}});
  // Sent after the ownership (one sender, one receiver: in order).
  if (!f.waiters.empty())
    notices_.push_back({f.owner, ticket, cache_notice::kind::wanted, {}});
}

/// `who` no longer waits for `ticket`; if it was made its owner meanwhile
/// (its owner gave it up while `who` was finishing), it gives it up too.
void service_cache::withdraw(uint64_t ticket,
                             const caf::strong_actor_ptr& who) {
  auto tag = mem_.tag_of(ticket);
  if (!tag)
    return;
  auto& f = flights_[*tag];
  if (f.owner == who) {
    release(ticket);
    return;
  }
  f.waiters.erase(std::remove(f.waiters.begin(), f.waiters.end(), who),
                  f.waiters.end());
}

void service_cache::prefetch(const std::vector<uint64_t>& hashes) const {
  for (auto h : hashes)
    mem_.prefetch(h);
}

void service_cache::prefetch(const cache_settle& s) const {
  if (s.epoch != epoch_)
    return;
  for (auto t : s.tickets)
    mem_.prefetch_ticket(t);
}

cache_lookup_result service_cache::lookup(const std::vector<std::string>& keys,
                                          const std::vector<uint64_t>& hashes,
                                          const caf::strong_actor_ptr& asker) {
  auto now = expiry_now();
  auto n = std::min(keys.size(), hashes.size());
  if (!crash_marker_.empty())
    for (auto& key : keys)
      if (cache_key_is_text(key, crash_marker_))
        throw std::runtime_error("chaos: cache crash marker received");
  cache_lookup_result r;
  r.epoch = epoch_;
  auto& a = r.answer;
  a.tickets = spare_tickets_.take();
  a.tickets.assign(n, 0);
  // Slots and vectors only when an input is not a distinct miss (or the
  // disk may turn misses into hits): the answer to a lookup of new inputs
  // is its tickets alone.
  auto detail = [&a, n] {
    if (a.slots.empty()) {
      a.slots.assign(n, static_cast<uint8_t>(cache_slot::owned));
      a.vectors.resize(n);
    }
  };
  bool reads_disk = disk_ && disk_->actor;
  if (reads_disk)
    detail();
  std::size_t reserved = 0;
  for (uint32_t i = 0; i < n; ++i) {
    auto tag = next_flight();
    auto found = mem_.find_or_reserve(keys[i], hashes[i], tag, now);
    switch (found.found) {
      case cache_find::hit:
        detail();
        a.slots[i] = static_cast<uint8_t>(cache_slot::hit);
        a.vectors[i] = found.vec.to_vector();
        ++counters_.hits;
        break;
      case cache_find::in_flight: {
        detail();
        auto& f = flights_[found.tag];
        a.tickets[i] = found.ticket;
        ++counters_.coalesced;
        if (f.owner == asker)
          break; // a duplicate inside the asker's own request
        a.slots[i] = static_cast<uint8_t>(cache_slot::waiting);
        if (std::find(f.waiters.begin(), f.waiters.end(), asker)
            == f.waiters.end()) {
          // The first waiter: the owner hands its vector over as soon as
          // its chunk is served, not with its whole reply.
          if (f.waiters.empty() && f.owner)
            notices_.push_back(
                {f.owner, found.ticket, cache_notice::kind::wanted, {}});
          f.waiters.push_back(asker);
        }
        break;
      }
      case cache_find::reserved: {
        auto& f = take_flight(tag);
        f.ticket = found.ticket;
        f.owner = asker;
        a.tickets[i] = found.ticket;
        ++counters_.misses;
        ++reserved;
        if (reads_disk) {
          r.disk_idx.push_back(i);
          r.disk_keys.push_back(keys[i]);
        }
        break;
      }
    }
  }
  a.distinct_misses = reserved == n;
  return r;
}

void service_cache::settle(cache_settle& s, const caf::strong_actor_ptr& from) {
  if (s.disk_failed)
    ++counters_.persistent_errors;
  auto now = expiry_now();
  s.for_each([&](uint64_t ticket, const float* data, std::size_t size) {
    if (complete(ticket, data, size, !s.from_disk, now) && s.from_disk) {
      // A miss of the lookup after all: counted as the store's hit.
      ++counters_.persistent_hits;
      ++counters_.hits;
      --counters_.misses;
    }
  });
  for (auto t : s.released)
    release(t);
  for (auto t : s.withdrawn)
    withdraw(t, from);
  recycle(s);
}

std::vector<float> service_cache::take_spare_floats() {
  return spare_floats_.take();
}

void service_cache::recycle(cache_settle& s) {
  spare_tickets_.keep(s.tickets, max_spare_bytes / 2);
  spare_floats_.keep(s.floats, max_spare_bytes);
}

void service_cache::actor_gone(const caf::actor_addr& who) {
  std::vector<uint64_t> owned;
  for (auto& f : flights_) {
    if (f.ticket == 0)
      continue;
    f.waiters.erase(std::remove_if(f.waiters.begin(), f.waiters.end(),
                                   [&](const caf::strong_actor_ptr& w) {
                                     return w && w->address() == who;
                                   }),
                    f.waiters.end());
    if (f.owner && f.owner->address() == who)
      owned.push_back(f.ticket);
  }
  for (auto t : owned)
    release(t);
}

std::vector<cache_notice> service_cache::take_notices() {
  std::vector<cache_notice> out;
  out.swap(notices_);
  return out;
}

void service_cache::disk_failed() {
  ++counters_.persistent_errors;
}

void service_cache::disk_written(int64_t n) {
  counters_.persistent_writes += n;
}

cache_metrics service_cache::stats() const {
  auto m = counters_;
  m.enabled = true;
  m.entries = static_cast<int64_t>(mem_.entries());
  m.bytes = static_cast<int64_t>(mem_.bytes());
  m.max_bytes = static_cast<int64_t>(mem_.max_bytes());
  m.evictions = mem_.counters().evictions;
  m.expirations = mem_.counters().expirations;
  return m;
}

} // namespace embedrt::detail
