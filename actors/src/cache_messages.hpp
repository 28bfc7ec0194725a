// Messages between request actors and the cache actor of their service
// (cache_actor.hpp; docs/caching.md has the message flow). Internal: they
// never leave the node and take no type ID.
#pragma once

#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/type_id.hpp>
#include <cstdint>
#include <string>
#include <vector>

CAF_ADD_ATOM(embedrt, embedrt::detail, cache_lookup_atom, "c_lookup")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_fill_atom, "c_fill")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_release_atom, "c_release")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_stats_atom, "c_stats")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_filled_atom, "c_filled")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_owner_atom, "c_owner")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_lost_atom, "c_lost")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_expire_atom, "c_expire")
CAF_ADD_ATOM(embedrt, embedrt::detail, disk_get_atom, "d_get")
CAF_ADD_ATOM(embedrt, embedrt::detail, disk_put_atom, "d_put")

namespace embedrt::detail {

/// A request actor asks about all its inputs at once: one cache key per
/// input (`cache_key`: its first route's upstream model, the dimensions and
/// the exact text or token ids) with its `cache_hash`. The asker builds and
/// hashes the keys, so the cache actor, which every request passes, only
/// looks them up; the key of a new miss moves into the store, as an entry in
/// flight.
struct cache_lookup {
  std::vector<std::string> keys;
  std::vector<uint64_t> hashes;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cache_lookup& x) {
  return f(caf::meta::type_name("embedrt.cache_lookup"), x.keys, x.hashes);
}

/// What became of one looked-up input.
enum class cache_slot : uint8_t {
  /// The vector is in the answer.
  hit = 0,
  /// The asker sends it upstream and fills the ticket (single-flight
  /// owner). Duplicates inside one lookup share one owned ticket.
  owned = 1,
  /// Another request owns the ticket: the asker is told `(c_filled, ticket,
  /// vector)` when it is filled, or `(c_owner, ticket)` when its owner gave
  /// it up and the asker owns it now.
  waiting = 2,
};

/// The answer to a lookup, one entry per input in input order.
struct cache_answer {
  /// Each input's `cache_slot`; empty when every input is owned (the
  /// answer to a lookup of new inputs is its tickets alone).
  std::vector<uint8_t> slots;
  /// The ticket of an owned or waiting input (0 for a hit).
  std::vector<uint64_t> tickets;
  /// The vector of a hit (empty for the others; no entries at all when
  /// `slots` is empty).
  std::vector<std::vector<float>> vectors;
  /// Hits that came from the persistent store.
  int64_t persistent_hits = 0;
  /// Every input a miss reserved by this lookup (none a hit, none in
  /// flight already, none repeated): the asker's inputs go upstream as
  /// they are, each owning its ticket.
  bool distinct_misses = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cache_answer& x) {
  return f(caf::meta::type_name("embedrt.cache_answer"), x.slots, x.tickets,
           x.vectors, x.persistent_hits, x.distinct_misses);
}

/// An owner's vectors for the tickets it owned.
struct cache_fill {
  std::vector<uint64_t> tickets;
  std::vector<std::vector<float>> vectors;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cache_fill& x) {
  return f(caf::meta::type_name("embedrt.cache_fill"), x.tickets, x.vectors);
}

} // namespace embedrt::detail
