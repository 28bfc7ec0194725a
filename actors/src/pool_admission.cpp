#include "pool_detail.hpp"

#include <algorithm>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <functional>

namespace embedrt::detail {

namespace {

/// Deadline-aware admission: when a call admitted now would complete (ns
/// from now) at the observed service rate: a connection freeing up, the
/// calls queued ahead drained by the live connections, then its own service
/// time. 0 when it would go out
/// at once, and while nothing has been observed (start-up: admission by
/// count alone).
int64_t expected_completion_ns(self_ptr self, const upstream_call& call,
                               int64_t now) {
  auto& st = self->state;
  if (st.service_ns == 0 || (st.queue.empty() && !st.idle.empty()))
    return 0; // Nothing observed yet, or it goes out at once.
  int64_t s = st.service_ns;
  uint32_t live = 0;
  auto& ages = st.busy_ages;
  ages.clear();
  for (const auto& slot : st.slots) {
    if (slot.st == pool_slot::state::dead)
      continue;
    ++live;
    if (slot.st == pool_slot::state::busy && slot.call_id != 0)
      ages.push_back(now - slot.dispatched_ns);
  }
  // Calls in flight for longer than twice the typical service time say the
  // upstream slowed down before any result says so. The age most of them
  // have reached, not the oldest: one hung call among many connections is
  // that call's problem (its attempt timeout ends it), not a slower upstream.
  if (!ages.empty()) {
    auto mid = ages.begin() + static_cast<std::ptrdiff_t>(ages.size() / 2);
    std::nth_element(ages.begin(), mid, ages.end(), std::greater<>{});
    s = std::max(s, *mid - s);
  }
  if (live == 0)
    return 0; // Restarting: the supervisor decides.
  auto ahead = static_cast<double>(st.queue.size());
  auto per_dispatch = std::max(1.0, st.calls_per_dispatch);
  if (st.env->batching) {
    // Under a backlog, batches grow up to the profile's inputs per call.
    auto inputs = std::max<std::size_t>(1, input_count(call));
    auto fit = static_cast<double>(
        std::max<std::size_t>(1, st.env->profile.max_inputs / inputs));
    per_dispatch = std::max(per_dispatch, std::min((ahead + 1) / live, fit));
  }
  // The queue ahead drains at live x per_dispatch calls per service time,
  // after the first connection frees up (half a service time on average).
  auto wait = ahead * static_cast<double>(s) / (live * per_dispatch);
  return static_cast<int64_t>(wait) + s / 2 + s;
}

} // namespace

std::size_t item_tokens(const upstream_call& call) {
  return static_cast<std::size_t>(std::max<int64_t>(1, call.tokens));
}

std::optional<call_result>
late_refusal(self_ptr self, const upstream_call& call, std::size_t tokens) {
  auto& st = self->state;
  auto now = now_ns(self);
  auto done_in = expected_completion_ns(self, call, now)
      + pacing_admission_ns(st.pacing, st.queue.size(),
                            static_cast<int64_t>(tokens), now);
  if (done_in > call.budget.count()) {
    // It would time out in the queue: refuse it now, while the caller can
    // still go elsewhere, and say when the excess will have drained.
    ++st.rejected;
    auto ms = [](int64_t ns) {
      return std::to_string((ns + 999999) / 1000000);
    };
    auto over = std::chrono::milliseconds{std::max<int64_t>(
        1, (done_in - call.budget.count() + 999999) / 1000000)};
    return failure(errc::overloaded,
                   st.env->cfg.name + ": cannot finish within the deadline ("
                       + std::to_string(st.queue.size()) + " calls queued, ~"
                       + ms(done_in) + " ms to complete, "
                       + ms(call.budget.count()) + " ms left)",
                   false, over);
  }
  return std::nullopt;
}

void learn_service_time(pool_state& st, int64_t took, std::size_t calls) {
  auto n = static_cast<double>(calls);
  if (st.service_ns == 0) {
    st.service_ns = std::max<int64_t>(1, took);
    st.calls_per_dispatch = n;
  } else {
    st.service_ns
        = std::max<int64_t>(1, st.service_ns + (took - st.service_ns) / 8);
    st.calls_per_dispatch += (n - st.calls_per_dispatch) / 8;
  }
}

void arm_watchdog(self_ptr self, int64_t at_ns) {
  auto& st = self->state;
  if (st.watchdog_at != 0 && st.watchdog_at <= at_ns)
    return; // Armed early enough.
  st.watchdog_at = at_ns;
  auto wait = caf::timespan{std::max<int64_t>(0, at_ns - now_ns(self))};
  self->delayed_send(self, wait, watchdog_atom_v, at_ns);
}

int64_t expire_queued(self_ptr self, int64_t now) {
  auto& st = self->state;
  int64_t next = 0;
  for (auto i = st.queue.begin(); i != st.queue.end();) {
    if (i->deadline_ns == 0 || i->deadline_ns > now) {
      if (i->deadline_ns != 0 && (next == 0 || i->deadline_ns < next))
        next = i->deadline_ns;
      ++i;
      continue;
    }
    auto item = std::move(*i);
    i = st.queue.erase(i);
    st.queue_bytes -= item.bytes;
    answer(self, item,
           failure(errc::deadline_exceeded,
                   "deadline passed while queued for " + st.env->cfg.name));
  }
  return next;
}

} // namespace embedrt::detail
