// The cache phase of a request actor (docs/caching.md): its service looked
// up all its inputs before handing it the request (the answer is in the
// job); hits are kept, the inputs it owns (one per distinct input) become the
// request's upstream inputs — the existing chunking, retries, failover and
// bisection then run on those alone — and inputs another request owns are
// waited for. At the reply everything is merged back in the caller's order.
//
// Index spaces: "caller" indices are the caller's inputs; "compact" indices
// are the inputs sent upstream (`st.req.inputs` / `token_inputs` and
// `st.tokens` during the upstream phase), each owning one ticket.
#pragma once

#include "cache_messages.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace embedrt::detail {

struct request_state;

struct request_cache_state {
  /// The cache's answer is applied: the upstream phase runs on the compact
  /// inputs.
  bool active = false;
  /// True when compact index == caller index (every input a distinct miss):
  /// nothing was moved.
  bool identity = false;
  /// Compact index -> its ticket.
  std::vector<uint64_t> ticket_of;
  /// Ticket -> the caller indices that get its vector (an owned ticket's
  /// first is the compact input's origin).
  std::unordered_map<uint64_t, std::vector<uint32_t>> targets;
  /// Tickets another request owns (each counts 1 in `st.pending`).
  std::unordered_set<uint64_t> waiting;
  /// Compact index -> handed to the cache (its vector sent at once, while
  /// the request waited for others' inputs); sized on the first mark, empty
  /// when none was. The rest go back at the reply: filled, or released.
  std::vector<bool> filled;
  /// Vectors of hits and filled waits, by caller index.
  std::vector<std::vector<float>> vectors;
  /// The caller's inputs and token estimates (moved aside while the
  /// upstream phase runs on the compact ones).
  std::vector<std::string> caller_texts;
  std::vector<std::vector<int32_t>> caller_ids;
  std::vector<int64_t> caller_tokens;
  /// Estimated tokens served without going upstream.
  int64_t cached_tokens = 0;
  /// The answer, until it is applied (a request refused before that hands
  /// its tickets back unapplied).
  std::optional<cache_lookup_result> answer;
  /// Notifications that arrived before the answer was applied (while its
  /// disk read was in flight).
  std::unordered_map<uint64_t, std::vector<float>> early_fills;
  std::vector<uint64_t> early_owned;
  /// The epoch of the cache that answered (its settle names it).
  uint64_t epoch = 0;
  /// Another request waits for an input this one owns (c_wanted): each
  /// chunk's vectors go to the cache as the chunk is served.
  bool wanted = false;
  /// The buffer the service lent for the settle's floats
  /// (`request_job::spare_floats`).
  std::vector<float> spare_floats;
};

/// The persistent store's answer to the owned misses' disk read: those it
/// found become hits of the answer (`st.cache.answer`); returns them as a
/// settle for the cache (`from_disk`), so that their waiters get them.
cache_settle take_disk_hits(request_state& st,
                            std::vector<std::vector<float>>& found);

/// Applies the cache's answer: hits stored, the owned inputs (one per
/// ticket) become `st.req`'s inputs and `st.tokens`. Returns the number of
/// tickets waited for. Notifications that came early are applied.
std::size_t apply_cache_answer(request_state& st, cache_answer& a);

/// The compact inputs [begin, end) got their vectors (in
/// `st.result.embeddings`) while the request waits for others' inputs:
/// their copies are appended to `out` (none when the chunk was served under
/// another upstream model than the lookup's), to send at once.
void add_cache_fill(request_state& st, uint32_t begin, uint32_t end,
                    const std::string& served_model, cache_settle& out);

/// A waited-for ticket was filled: true if it was waited for (the wait is
/// settled).
bool take_cache_fill(request_state& st, uint64_t ticket,
                     std::vector<float>& vec);

/// The request owns a waited-for ticket now: its input is appended to the
/// compact inputs; returns its compact index (nullopt: not waited for).
std::optional<uint32_t> take_cache_ownership(request_state& st,
                                             uint64_t ticket);

/// Another request waits for `ticket`: true if this request owns it (then
/// `wanted` is set; an answer not applied yet is searched for it).
bool mark_cache_wanted(request_state& st, uint64_t ticket);

/// The caller indices a compact index stands for (rejected inputs).
std::vector<uint32_t> caller_indices(const request_state& st, uint32_t compact);

/// At the reply: what goes back to the cache (copies of the vectors of the
/// chunks done under the lookup's model not sent yet, the owned tickets
/// left unfilled, the waits not settled; an answer never applied hands
/// back all its tickets) and — on success — every vector put back in
/// the caller's order, the caller's inputs restored, `usage.cached_tokens`
/// set.
cache_settle finish_cache_phase(request_state& st, bool success);

} // namespace embedrt::detail
