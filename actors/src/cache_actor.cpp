#include "cache_actor.hpp"

#include "embedrt/log.hpp"

#include <algorithm>
#include <caf/actor_cast.hpp>
#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <caf/spawn_options.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace embedrt::detail {

namespace {

using clock_type = embedding_cache::clock;
using vectors = std::vector<std::vector<float>>;

/// Time a disk operation may take before the cache gives up on it (the
/// lookup is then answered without the store).
constexpr auto disk_timeout = std::chrono::seconds{30};
/// Filled vectors waiting for the disk writer at most; more are not
/// persisted (counted as persistent errors).
constexpr std::size_t max_write_backlog = 4096;

// -- the disk actor -----------------------------------------------------------

/// The persistent store's own actor (detached: blocking LMDB calls on its
/// own thread): get answers one vector per key (empty: absent), put one
/// transaction per batch (answers the entries written).
using disk_actor = caf::typed_actor<
    caf::replies_to<disk_get_atom, std::vector<std::string>>::with<vectors>,
    caf::replies_to<disk_put_atom, std::vector<std::string>,
                    vectors>::with<int64_t>>;

struct disk_state {
  static inline const char* name = "embedrt.cache_disk";
  std::shared_ptr<persistent_store> store;
  milliseconds ttl{0};
};

disk_actor::behavior_type disk_fn(disk_actor::stateful_pointer<disk_state> self,
                                  std::shared_ptr<persistent_store> store,
                                  milliseconds ttl) {
  self->state.store = std::move(store);
  self->state.ttl = ttl;
  return {
      [self](disk_get_atom,
             const std::vector<std::string>& keys) -> caf::result<vectors> {
        vectors out;
        std::string err;
        if (!self->state.store->get(keys, self->state.ttl, out, err))
          return caf::make_error(caf::sec::runtime_error, std::move(err));
        return out;
      },
      [self](disk_put_atom, const std::vector<std::string>& keys,
             const vectors& vecs) -> caf::result<int64_t> {
        std::string err;
        if (!self->state.store->put(keys, vecs, err))
          return caf::make_error(caf::sec::runtime_error, std::move(err));
        return static_cast<int64_t>(keys.size());
      },
  };
}

// -- the cache actor ----------------------------------------------------------

/// Who sends an input in flight upstream (its owner) and who waits for its
/// vector. The entry itself (key, ticket) is in the store, in flight; its
/// tag there is the index of this record in `cache_state::flights`.
struct flight {
  uint64_t ticket = 0;
  caf::strong_actor_ptr owner;
  std::vector<caf::strong_actor_ptr> waiters;
};

struct cache_state {
  static inline const char* name = "embedrt.cache";

  cache_config cfg;
  std::string crash_marker;
  std::unique_ptr<embedding_cache> mem;
  /// Records of the inputs in flight (a slab: free records are reused).
  std::vector<flight> flights;
  std::vector<uint32_t> free_flights;
  /// Owners monitored (someone waits for them), by actor id.
  std::unordered_set<caf::actor_id> monitored;
  cache_metrics counters;
  std::shared_ptr<persistent_store> store;
  disk_actor disk;
  std::vector<std::string> write_keys;
  vectors write_vecs;
  bool writing = false;
};

using cache_ptr = cache_actor::stateful_pointer<cache_state>;

void disk_failed(cache_ptr self, const char* what, const caf::error& err) {
  ++self->state.counters.persistent_errors;
  log(log_level::warn, "cache_store_error",
      {{"operation", what}, {"reason", caf::to_string(err)}});
}

/// Sends the buffered fills to the disk actor: one write in flight, the
/// next batch is whatever accumulated meanwhile.
void flush_writes(cache_ptr self) {
  auto& st = self->state;
  if (!st.disk || st.writing || st.write_keys.empty())
    return;
  st.writing = true;
  self->request(st.disk, disk_timeout, disk_put_atom_v,
                std::move(st.write_keys), std::move(st.write_vecs))
      .then(
          [self](int64_t written) {
            self->state.counters.persistent_writes += written;
            self->state.writing = false;
            flush_writes(self);
          },
          [self](caf::error& err) {
            disk_failed(self, "write", err);
            self->state.writing = false;
            flush_writes(self);
          });
  st.write_keys.clear();
  st.write_vecs.clear();
}

void queue_write(cache_ptr self, const std::string& key,
                 const std::vector<float>& vec) {
  auto& st = self->state;
  if (!st.disk)
    return;
  if (st.write_keys.size() >= max_write_backlog) {
    ++st.counters.persistent_errors;
    return;
  }
  st.write_keys.push_back(key);
  st.write_vecs.push_back(vec);
}

/// The record a new reservation will take (not taken yet: a lookup that
/// hits or joins a flight leaves it free).
uint32_t next_flight(cache_state& st) {
  if (!st.free_flights.empty())
    return st.free_flights.back();
  return static_cast<uint32_t>(st.flights.size());
}

flight& take_flight(cache_state& st, uint32_t tag) {
  if (!st.free_flights.empty() && st.free_flights.back() == tag)
    st.free_flights.pop_back();
  else
    st.flights.emplace_back();
  return st.flights[tag];
}

void free_flight(cache_state& st, uint32_t tag) {
  auto& f = st.flights[tag];
  f.ticket = 0;
  f.owner = nullptr;
  f.waiters.clear();
  st.free_flights.push_back(tag);
}

/// A ticket's vector arrived (from its owner or the store): waiters get it,
/// the cache keeps it (the entry in flight becomes a stored one).
void complete(cache_ptr self, uint64_t ticket, std::vector<float> vec,
              bool persist, clock_type::time_point now) {
  auto& st = self->state;
  auto tag = st.mem->tag_of(ticket);
  if (!tag)
    return;
  auto& f = st.flights[*tag];
  for (auto& w : f.waiters)
    self->send(caf::actor_cast<cache_waiter>(w), cache_filled_atom_v, ticket,
               vec);
  free_flight(st, *tag);
  if (persist)
    queue_write(self, *st.mem->key_of(ticket), vec);
  st.mem->fill(ticket, std::move(vec), now);
}

/// The owner gave the ticket up (or died): the first waiter owns it now.
void release(cache_ptr self, uint64_t ticket) {
  auto& st = self->state;
  auto tag = st.mem->tag_of(ticket);
  if (!tag)
    return;
  auto& f = st.flights[*tag];
  if (f.waiters.empty()) {
    free_flight(st, *tag);
    st.mem->abandon(ticket);
    return;
  }
  f.owner = std::move(f.waiters.front());
  f.waiters.erase(f.waiters.begin());
  self->send(caf::actor_cast<cache_waiter>(f.owner), cache_owner_atom_v,
             ticket);
  if (!f.waiters.empty() && st.monitored.insert(f.owner->id()).second)
    self->monitor(caf::actor_cast<caf::actor>(f.owner));
}

void add_waiter(cache_ptr self, flight& f, const caf::strong_actor_ptr& who) {
  auto& st = self->state;
  for (auto& w : f.waiters)
    if (w == who)
      return;
  f.waiters.push_back(who);
  // Watched from now on: if it ends without fill or release, its down
  // message releases its tickets (an owner already gone: at once).
  if (f.owner && st.monitored.insert(f.owner->id()).second)
    self->monitor(caf::actor_cast<caf::actor>(f.owner));
}

/// The store's answer to a lookup's memory misses: hits become hits of the
/// answer (and of anyone who started waiting meanwhile).
void on_disk_found(cache_ptr self, cache_answer& a,
                   const std::vector<uint32_t>& idx, vectors& found) {
  auto& st = self->state;
  std::unordered_map<uint64_t, std::size_t> by_ticket;
  for (std::size_t k = 0; k < idx.size() && k < found.size(); ++k)
    if (!found[k].empty())
      by_ticket.emplace(a.tickets[idx[k]], k);
  if (by_ticket.empty())
    return;
  a.distinct_misses = false;
  for (std::size_t i = 0; i < a.slots.size(); ++i) {
    if (a.slots[i] != static_cast<uint8_t>(cache_slot::owned))
      continue;
    auto f = by_ticket.find(a.tickets[i]);
    if (f == by_ticket.end())
      continue;
    a.slots[i] = static_cast<uint8_t>(cache_slot::hit);
    a.vectors[i] = found[f->second];
    a.tickets[i] = 0;
  }
  for (auto& [ticket, k] : by_ticket) {
    ++a.persistent_hits;
    ++st.counters.persistent_hits;
    ++st.counters.hits;
    --st.counters.misses;
    complete(self, ticket, std::move(found[k]), false, clock_type::now());
  }
}

/// The clock reading a lookup or fill compares expiry times with: none
/// without a TTL (nothing expires), so a cache without one reads no clock.
clock_type::time_point expiry_now(const cache_state& st) {
  return st.mem->expires() ? clock_type::now() : clock_type::time_point{};
}

caf::result<cache_answer> on_lookup(cache_ptr self, cache_lookup& q) {
  auto& st = self->state;
  auto sender = self->current_sender();
  auto now = expiry_now(st);
  auto n = std::min(q.keys.size(), q.hashes.size());
  if (!st.crash_marker.empty())
    for (auto& key : q.keys)
      if (cache_key_is_text(key, st.crash_marker))
        throw std::runtime_error("chaos: cache crash marker received");
  for (std::size_t i = 0; i < n; ++i)
    st.mem->prefetch(q.hashes[i]);
  cache_answer a;
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
  if (st.disk)
    detail();
  std::vector<uint32_t> disk_idx;
  std::vector<std::string> disk_keys;
  std::size_t reserved = 0;
  for (uint32_t i = 0; i < n; ++i) {
    auto tag = next_flight(st);
    auto r = st.mem->find_or_reserve(q.keys[i], q.hashes[i], tag, now);
    switch (r.found) {
      case cache_find::hit:
        detail();
        a.slots[i] = static_cast<uint8_t>(cache_slot::hit);
        a.vectors[i] = *r.vec;
        ++st.counters.hits;
        break;
      case cache_find::in_flight: {
        detail();
        auto& f = st.flights[r.tag];
        a.tickets[i] = r.ticket;
        ++st.counters.coalesced;
        if (f.owner == sender)
          break; // a duplicate inside the asker's own request
        a.slots[i] = static_cast<uint8_t>(cache_slot::waiting);
        add_waiter(self, f, sender);
        break;
      }
      case cache_find::reserved: {
        auto& f = take_flight(st, tag);
        f.ticket = r.ticket;
        f.owner = sender;
        a.tickets[i] = r.ticket;
        ++st.counters.misses;
        ++reserved;
        if (st.disk) {
          disk_idx.push_back(i);
          disk_keys.push_back(*st.mem->key_of(r.ticket));
        }
        break;
      }
    }
  }
  a.distinct_misses = reserved == n;
  if (disk_idx.empty())
    return a;
  auto rp = self->make_response_promise<cache_answer>();
  auto ap = std::make_shared<cache_answer>(std::move(a));
  self->request(st.disk, disk_timeout, disk_get_atom_v, disk_keys)
      .then(
          [self, rp, ap, disk_idx](vectors& found) mutable {
            on_disk_found(self, *ap, disk_idx, found);
            rp.deliver(std::move(*ap));
          },
          [self, rp, ap](caf::error& err) mutable {
            disk_failed(self, "read", err);
            rp.deliver(std::move(*ap));
          });
  return rp;
}

void on_fill(cache_ptr self, cache_fill& f) {
  auto now = expiry_now(self->state);
  for (std::size_t i = 0; i < f.tickets.size() && i < f.vectors.size(); ++i)
    complete(self, f.tickets[i], std::move(f.vectors[i]), true, now);
  flush_writes(self);
}

void on_down(cache_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  if (st.disk && st.disk.address() == dm.source) {
    log(log_level::error, "cache_store_down",
        {{"reason", caf::to_string(dm.reason)}});
    st.disk = nullptr;
    st.write_keys.clear();
    st.write_vecs.clear();
    return;
  }
  st.monitored.erase(dm.source.id());
  std::vector<uint64_t> orphans;
  for (auto& f : st.flights)
    if (f.owner && f.owner->id() == dm.source.id())
      orphans.push_back(f.ticket);
  for (auto t : orphans)
    release(self, t);
}

cache_metrics stats(const cache_state& st) {
  auto m = st.counters;
  m.enabled = true;
  m.entries = static_cast<int64_t>(st.mem->entries());
  m.bytes = static_cast<int64_t>(st.mem->bytes());
  m.max_bytes = static_cast<int64_t>(st.mem->max_bytes());
  m.evictions = st.mem->counters().evictions;
  m.expirations = st.mem->counters().expirations;
  return m;
}

cache_actor::behavior_type cache_fn(cache_ptr self, cache_config cfg,
                                    std::shared_ptr<persistent_store> store,
                                    std::string crash_marker) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.crash_marker = std::move(crash_marker);
  st.mem = std::make_unique<embedding_cache>(st.cfg.max_bytes, st.cfg.ttl);
  st.store = std::move(store);
  if (st.store)
    st.disk = self->spawn<caf::detached + caf::monitored>(disk_fn, st.store,
                                                          st.cfg.ttl);
  // The disk actor ends with the cache actor, after the writes sent to it
  // (its exit message queues behind them).
  if (st.disk)
    self->attach_functor([disk = caf::actor_cast<caf::actor>(st.disk)] {
      caf::anon_send_exit(disk, caf::exit_reason::user_shutdown);
    });
  // Stopped (by the service): the fills not written yet go to the disk
  // actor first, so a run that ends keeps everything it embedded. (Fills
  // sent before the stop are in the mailbox before the exit message.)
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    if (st.disk && !st.write_keys.empty())
      caf::anon_send(st.disk, disk_put_atom_v, std::move(st.write_keys),
                     std::move(st.write_vecs));
    self->quit(msg.reason);
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    on_down(self, dm);
  });
  return {
      [self](cache_lookup_atom, cache_lookup& q) {
        return on_lookup(self, q);
      },
      [self](cache_fill_atom, cache_fill& f) {
        on_fill(self, f);
      },
      [self](cache_release_atom, const std::vector<uint64_t>& tickets) {
        for (auto t : tickets)
          release(self, t);
      },
      [self](cache_stats_atom) {
        return stats(self->state);
      },
  };
}

} // namespace

cache_actor spawn_cache_actor(caf::actor_system& sys, const cache_config& cfg,
                              std::shared_ptr<persistent_store> store,
                              std::string crash_marker) {
  return sys.spawn(cache_fn, cfg, std::move(store), std::move(crash_marker));
}

} // namespace embedrt::detail
