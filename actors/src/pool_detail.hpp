// The parts of the pool actor (pool_actor.hpp) its source files share, not
// installed: pool_actor.cpp holds the behaviour and its message handlers,
// pool_outcomes.cpp the answers a pool gives and what it concludes from a
// connection's result, pool_admission.cpp deadline-aware admission, the
// watchdog's timer and the expiry of queued calls, pool_batching.cpp
// batching and the dispatch loop (docs/architecture.md, "pool actor").
#pragma once

#include "embedrt/protocol/errc.hpp"
#include "pool_actor.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace embedrt::detail {

using self_ptr = pool_impl::stateful_pointer<pool_state>;

inline int64_t now_ns(self_ptr self) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             self->clock().now().time_since_epoch())
      .count();
}

// -- pool_actor.cpp ----------------------------------------------------------

/// Hands queued work to idle connections, then tells the watcher if the
/// availability changed (every state change ends here).
void dispatch(self_ptr self);

// -- pool_outcomes.cpp -------------------------------------------------------

/// A failed call's answer: `code` with `detail`, whether the caller may
/// retry it, and after how long.
call_result failure(errc code, std::string detail, bool retryable = false,
                    std::chrono::milliseconds retry_after = {});

/// The answer while the upstream is down: fail fast, with the time to the
/// probe (never negative).
call_result down_failure(self_ptr self, const std::string& why);

/// The answer while the breaker is open (or half-open without a permit):
/// fail fast, with the time until it lets calls out again.
call_result breaker_failure(self_ptr self);

/// Tells the breaker how a call went (no breaker: nothing to do).
void report(self_ptr self, const pool_slot& slot, const call_result& r);

/// Answers an item and releases its share of the retry budget.
void answer(pool_state& st, pool_item& item, call_result r);
void answer(self_ptr self, pool_item& item, call_result r);

/// Tells a refusal of bad input from an upstream that refuses everything:
/// the same message for distinct requests, with no success in between, is
/// the upstream's (misconfigured: a wrong port or scheme, a parameter it
/// never takes); its refusals become `upstream_error` 502, which the breaker
/// counts and readiness reports. Any success ends it.
void judge_refusal(self_ptr self, const std::vector<pool_item>& items,
                   call_result& r);

// -- pool_admission.cpp ------------------------------------------------------

/// The tokens a call counts for in a batch: the request actor's estimate,
/// carried in the call. At least 1, so that a learned token cap always makes
/// the next batch smaller.
std::size_t item_tokens(const upstream_call& call);

/// Deadline-aware admission of `call` (estimated `tokens`, with a budget):
/// the refusal to answer if it would not complete within its budget (see
/// expected_completion_ns), nothing if it may be queued.
std::optional<call_result>
late_refusal(self_ptr self, const upstream_call& call, std::size_t tokens);

/// What admission learns from a result: how long the call took its
/// connection (`took`, ns from dispatch) and how many queued calls it
/// carried.
void learn_service_time(pool_state& st, int64_t took, std::size_t calls);

/// Arms the pool's watchdog for `at_ns` unless it is armed for an earlier
/// time (pool_state::watchdog_at).
void arm_watchdog(self_ptr self, int64_t at_ns);

/// Answers every queued call whose deadline has passed (wherever it is in
/// the queue: deadlines are not in queue order); returns the earliest
/// deadline left in the queue (0: none).
int64_t expire_queued(self_ptr self, int64_t now);

// -- pool_batching.cpp -------------------------------------------------------

/// Calls in flight (busy slots).
uint32_t busy_calls(const pool_state& st);

/// Puts items back at the front of the queue, keeping their order.
void requeue_front(self_ptr self, std::vector<pool_item>& items, bool crashed);

/// A merged call succeeded: each caller gets the vectors of its own inputs
/// and its share of the usage (by its estimated tokens; exact counts for
/// token arrays).
void split_result(self_ptr self, std::vector<pool_item>& items, call_result& r);

/// A call failed: re-batch, resend alone, or answer the callers.
void on_failed_call(self_ptr self, pool_slot& slot,
                    std::vector<pool_item>& items, call_result& r);

/// Hands queued work to idle connections (see dispatch).
void dispatch_work(self_ptr self);

} // namespace embedrt::detail
