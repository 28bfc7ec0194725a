// The cache actor: one per service, the only owner of the service's
// embedding cache (docs/caching.md, docs/architecture.md).
//
//   request actor --lookup(inputs)--> cache: per input a hit (vector), owned
//                                     (the asker sends it upstream) or
//                                     waiting (another request owns it)
//   request actor --fill(tickets, vectors)--> cache: stored; waiters get
//                                     (c_filled, ticket, vector)
//   request actor --release(tickets)--> cache: given up unfilled; the first
//                                     waiter owns it now (c_owner, ticket)
//   owner ends without fill or release (killed): its down message (it is
//   monitored once someone waits for it) releases its tickets
//
// With a persistent store, memory misses are looked up on disk by the disk
// actor (detached: its own thread, blocking LMDB calls) before the lookup is
// answered, and filled vectors are written to it in batches, one write in
// flight at a time. A dead disk actor turns the store off (logged): the
// memory cache goes on.
#pragma once

#include "cache_policy.hpp"
#include "embedrt/config.hpp"
#include "interfaces.hpp"
#include "persistent_cache.hpp"

#include <caf/actor_system.hpp>
#include <memory>

namespace embedrt::detail {

/// Spawns the cache actor of a service. `store` is the opened persistent
/// store (null: memory only); a lookup with an input equal to
/// `crash_marker` (if not empty) makes it throw (tests of its supervision).
cache_actor spawn_cache_actor(caf::actor_system& sys, const cache_config& cfg,
                              std::shared_ptr<persistent_store> store,
                              std::string crash_marker = {});

} // namespace embedrt::detail
