// What travels between request actors and the embedding cache their
// service keeps (service_cache.hpp; docs/caching.md has the flow). Internal:
// it never leaves the node and takes no type ID.
#pragma once

#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/type_id.hpp>
#include <cstdint>
#include <string>
#include <vector>

CAF_ADD_ATOM(embedrt, embedrt::detail, cache_fill_atom, "c_fill")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_filled_atom, "c_filled")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_owner_atom, "c_owner")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_lost_atom, "c_lost")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_wanted_atom, "c_wanted")
CAF_ADD_ATOM(embedrt, embedrt::detail, cache_expire_atom, "c_expire")
CAF_ADD_ATOM(embedrt, embedrt::detail, disk_get_atom, "d_get")
CAF_ADD_ATOM(embedrt, embedrt::detail, disk_put_atom, "d_put")

namespace embedrt::detail {

/// What became of one looked-up input.
enum class cache_slot : uint8_t {
  /// The vector is in the answer.
  hit = 0,
  /// The asker sends it upstream and fills the ticket (single-flight
  /// owner). Duplicates inside one lookup share one owned ticket.
  owned = 1,
  /// Another request owns the ticket: the asker is told `(c_filled, ticket,
  /// vector)` when it is filled, or `(c_owner, ticket)` when its owner gave
  /// it up and the asker owns it now. The owner is told `(c_wanted,
  /// ticket)` when its first waiter comes: from then on it hands each chunk's
  /// vectors to the cache as the chunk is served, not at its reply.
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

/// What a request actor gets in its job with the cache on: the answer, the
/// epoch of the cache that gave it (`cache_settle::epoch`) and, with a
/// persistent store, the owned misses to look up on disk first (their
/// indices into the answer, their keys) before anything goes upstream.
struct cache_lookup_result {
  cache_answer answer;
  uint64_t epoch = 0;
  std::vector<uint32_t> disk_idx;
  std::vector<std::string> disk_keys;
};

/// What a request actor hands back to the cache of its service: the
/// vectors of tickets it owned (sent with `request_done` at its reply, or at
/// once as `(c_fill, settle)` while it waits for others' inputs), the owned
/// tickets it gives up unfilled and the tickets it no longer waits for.
/// `epoch` names the cache that answered its lookup: a cache started again
/// after a crash ignores another epoch's tickets. `from_disk`: the vectors
/// are the persistent store's (sent at once after the request's disk read;
/// not written back), `disk_failed`: that read failed.
///
/// The vectors travel one after another in `floats` (one allocation for
/// all of them, not one each): `dims` floats each, or `sizes[i]` each when
/// their lengths differ (`sizes` is empty otherwise). `add` and `for_each`
/// keep the two consistent.
struct cache_settle {
  uint64_t epoch = 0;
  std::vector<uint64_t> tickets;
  std::vector<float> floats;
  uint32_t dims = 0;
  std::vector<uint32_t> sizes;
  std::vector<uint64_t> released;
  std::vector<uint64_t> withdrawn;
  bool from_disk = false;
  bool disk_failed = false;

  /// Appends `ticket`'s vector.
  void add(uint64_t ticket, const std::vector<float>& vec) {
    add_floats(tickets.size(), vec);
    tickets.push_back(ticket);
  }

  /// Appends the vector of the `i`th ticket, `i` vectors being there
  /// already (for a caller that sets `tickets` as a whole).
  void add_floats(std::size_t i, const std::vector<float>& vec) {
    auto n = static_cast<uint32_t>(vec.size());
    if (i == 0)
      dims = n;
    else if (sizes.empty() && n != dims)
      sizes.assign(i, dims);
    if (!sizes.empty())
      sizes.push_back(n);
    floats.insert(floats.end(), vec.begin(), vec.end());
  }

  /// Calls `f(ticket, data, size)` for each ticket and its vector, in
  /// order; stops at a vector the floats do not hold (a malformed settle).
  template <class F>
  void for_each(F&& f) const {
    std::size_t off = 0;
    for (std::size_t i = 0; i < tickets.size(); ++i) {
      if (!sizes.empty() && i >= sizes.size())
        return;
      std::size_t n = sizes.empty() ? dims : sizes[i];
      if (off + n > floats.size())
        return;
      f(tickets[i], floats.data() + off, n);
      off += n;
    }
  }
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cache_settle& x) {
  return f(caf::meta::type_name("embedrt.cache_settle"), x.epoch, x.tickets,
           x.floats, x.dims, x.sizes, x.released, x.withdrawn, x.from_disk,
           x.disk_failed);
}

} // namespace embedrt::detail
