#include "embedrt/log.hpp"
#include "pool_detail.hpp"

#include <algorithm>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

namespace embedrt::detail {

namespace {

/// Extra time granted to a connection actor beyond its attempt timeout before
/// the pool considers it stuck (the transport itself closes the socket at the
/// attempt timeout).
constexpr auto stuck_grace = std::chrono::seconds{2};

/// Calls that were held by this many dying connections fail instead of being
/// re-queued again (a poison call must not take the upstream down).
constexpr uint32_t max_crashes_per_call = 2;

bool compatible(const pool_item& a, const pool_item& b) {
  // One upstream request holds texts or token arrays, never both.
  return !b.solo && a.call.inputs.empty() == b.call.inputs.empty()
      && a.call.model == b.call.model && a.call.dimensions == b.call.dimensions
      && a.call.user == b.call.user;
}

/// Answers the queue's front while its deadline has passed; true if the
/// queue still has work.
bool drop_expired_front(self_ptr self, int64_t now) {
  auto& st = self->state;
  while (!st.queue.empty()) {
    auto& front = st.queue.front();
    if (front.deadline_ns == 0 || front.deadline_ns > now)
      return true;
    auto item = std::move(front);
    st.queue.pop_front();
    st.queue_bytes -= item.bytes;
    answer(self, item,
           failure(errc::deadline_exceeded,
                   "deadline passed while queued for " + st.env->cfg.name));
  }
  return false;
}

/// Moves the queue's front and as many compatible calls as fit one upstream
/// request (batching) into `slot.batch`; returns the earliest deadline (ns,
/// 0 = none) and the number of inputs.
int64_t take_batch(self_ptr self, pool_slot& slot, int64_t now,
                   std::size_t& inputs) {
  auto& st = self->state;
  const auto& prof = st.env->profile;
  auto token_limit = prof.max_tokens_per_request;
  if (st.token_cap != 0)
    token_limit = std::min(token_limit, st.token_cap);
  token_limit = static_cast<std::size_t>(std::min<int64_t>(
      static_cast<int64_t>(token_limit), pacing_token_cap(st.pacing, now)));
  slot.batch.clear();
  inputs = 0;
  std::size_t tokens = 0;
  std::size_t bytes = 0;
  int64_t earliest = 0;
  do {
    auto& next = st.queue.front();
    if (!slot.batch.empty()) {
      if (!st.env->batching || !compatible(slot.batch.front(), next)
          || slot.batch.front().solo
          || inputs + input_count(next.call) > prof.max_inputs
          || tokens + next.tokens > token_limit
          || bytes + next.bytes > prof.max_request_bytes / 2)
        break;
      if (next.deadline_ns != 0 && next.deadline_ns <= now)
        break; // Answered as expired by the next round.
    }
    inputs += input_count(next.call);
    tokens += next.tokens;
    bytes += next.bytes;
    if (next.deadline_ns != 0 && (earliest == 0 || next.deadline_ns < earliest))
      earliest = next.deadline_ns;
    st.queue_bytes -= next.bytes;
    next.queue_ns = now - next.enqueued_ns;
    slot.batch.emplace_back(std::move(next));
    st.queue.pop_front();
  } while (!st.queue.empty());
  slot.tokens = tokens;
  return earliest;
}

/// Sends the batch in `slot` to its connection as one upstream request.
void send_batch(self_ptr self, pool_slot& slot, int64_t now, int64_t earliest,
                std::size_t inputs) {
  auto& st = self->state;
  connection_call cc;
  cc.call_id = ++st.next_call_id;
  const auto& first = slot.batch.front().call;
  cc.model = first.model;
  cc.dimensions = first.dimensions;
  cc.user = first.user;
  if (first.token_inputs.empty()) {
    cc.inputs.reserve(inputs);
    for (auto& item : slot.batch)
      cc.inputs.insert(cc.inputs.end(), item.call.inputs.begin(),
                       item.call.inputs.end());
  } else {
    cc.token_inputs.reserve(inputs);
    for (auto& item : slot.batch)
      cc.token_inputs.insert(cc.token_inputs.end(),
                             item.call.token_inputs.begin(),
                             item.call.token_inputs.end());
  }
  caf::timespan timeout = st.env->cfg.attempt_timeout;
  slot.deadline_capped = false;
  if (earliest != 0 && caf::timespan{earliest - now} < timeout) {
    timeout = caf::timespan{earliest - now};
    slot.deadline_capped = true;
  }
  cc.timeout = timeout;
  cc.float_only = st.float_only;
  slot.breaker_epoch = st.view.epoch;
  if (st.view.state == breaker_state::half_open)
    --st.permits;
  slot.st = pool_slot::state::busy;
  slot.call_id = cc.call_id;
  slot.dispatched_ns = now;
  pacing_sent(st.pacing, cc.call_id, static_cast<int64_t>(slot.tokens), now);
  slot.stuck_at_ns = now + caf::timespan{timeout + stuck_grace}.count();
  arm_watchdog(self, slot.stuck_at_ns);
  // A message, not a request: the connection answers with (result, ...) by
  // call id, so a connection that dies leaves no response handler behind;
  // its I/O has its own deadline, and the watchdog catches it if stuck.
  self->send(slot.hdl, call_atom_v, std::move(cc));
}

/// Arms the pool's one pacing timer for `at_ns` unless it fires earlier.
void arm_pace_timer(self_ptr self, int64_t at_ns, int64_t now) {
  auto& p = self->state.pacing;
  if (p.timer_at != 0 && p.timer_at <= at_ns)
    return;
  p.timer_at = at_ns;
  self->delayed_send(self, caf::timespan{at_ns - now}, pace_atom_v, at_ns);
}

/// Whether pacing and the concurrency limit let the queue's front go now;
/// if the pacer holds it, the pacing timer dispatches again when it may go
/// (the limit: the next result does).
bool paced(self_ptr self, int64_t now) {
  auto& st = self->state;
  if (!st.pacing.pace && !st.pacing.limit)
    return true;
  auto busy = st.pacing.limit ? busy_calls(st) : 0;
  auto wait = pacing_wait(st.pacing, busy,
                          static_cast<int64_t>(st.queue.front().tokens), now);
  if (wait > 0)
    arm_pace_timer(self, now + wait, now);
  return wait == 0;
}

} // namespace

uint32_t busy_calls(const pool_state& st) {
  uint32_t n = 0;
  for (const auto& slot : st.slots)
    n += slot.st == pool_slot::state::busy && slot.call_id != 0 ? 1 : 0;
  return n;
}

void requeue_front(self_ptr self, std::vector<pool_item>& items, bool crashed) {
  auto& st = self->state;
  // A crash in a merged batch is not held against its calls: they are resent
  // alone, so a poison call is isolated and only it can exhaust its crashes.
  bool isolate = crashed && items.size() > 1;
  for (auto i = items.rbegin(); i != items.rend(); ++i) {
    if (st.down) {
      // Nothing is dispatched while down: answer now (callers fail over).
      answer(self, *i, down_failure(self, "upstream is down"));
      continue;
    }
    if (st.view.state == breaker_state::open) {
      // Nothing is dispatched while the breaker is open: answer now.
      answer(self, *i, breaker_failure(self));
      continue;
    }
    if (isolate) {
      i->solo = true;
    } else if (crashed && ++i->crashes > max_crashes_per_call) {
      answer(self, *i,
             failure(errc::connection_failed,
                     st.env->cfg.name
                         + ": connection actor died repeatedly on this call",
                     false));
      continue;
    }
    if (i->deadline_ns != 0) {
      if (i->deadline_ns <= now_ns(self)) {
        answer(self, *i,
               failure(errc::deadline_exceeded,
                       "deadline passed before the call could be resent to "
                           + st.env->cfg.name));
        continue;
      }
      arm_watchdog(self, i->deadline_ns);
    }
    st.queue_bytes += i->bytes;
    st.queue.push_front(std::move(*i));
  }
  items.clear();
}

void split_result(self_ptr self, std::vector<pool_item>& items,
                  call_result& r) {
  std::vector<std::size_t> weights;
  weights.reserve(items.size());
  for (auto& item : items)
    weights.push_back(item.tokens);
  auto usages = split_usage(r.usage, weights);
  std::size_t offset = 0;
  for (std::size_t k = 0; k < items.size(); ++k) {
    auto& item = items[k];
    auto n = input_count(item.call);
    call_result part;
    part.call_id = r.call_id;
    part.model = r.model;
    part.upstream_request_id = r.upstream_request_id;
    part.connected = r.connected;
    part.reused = r.reused;
    part.upstream_ns = r.upstream_ns;
    part.ratelimit_remaining_requests = r.ratelimit_remaining_requests;
    part.ratelimit_remaining_tokens = r.ratelimit_remaining_tokens;
    part.embeddings.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
      part.embeddings.emplace_back(std::move(r.embeddings[offset + i]));
    part.usage = usages[k];
    offset += n;
    answer(self, item, std::move(part));
  }
}

void on_failed_call(self_ptr self, pool_slot& slot,
                    std::vector<pool_item>& items, call_result& r) {
  auto& st = self->state;
  if (r.base64_refused) {
    // The upstream only answers floats: remember it and send these again
    // (calls sent in base64 before it was known come back here too).
    if (!st.float_only)
      log(log_level::warn, "upstream_refuses_base64",
          {{"upstream", st.env->cfg.name},
           {"error", render_error(r.error)},
           {"fallback", "float"}});
    st.float_only = true;
    requeue_front(self, items, false);
    return;
  }
  if (items.size() > 1 && r.too_large) {
    // The upstream accepts fewer tokens per request than the profile says:
    // learn a smaller cap and re-batch under it.
    auto cap = std::max<std::size_t>(1, slot.tokens / 2);
    if (st.token_cap == 0 || cap < st.token_cap) {
      st.token_cap = cap;
      log(log_level::warn, "token_cap_lowered",
          {{"upstream", st.env->cfg.name},
           {"tokens_per_request", std::to_string(cap)},
           {"error", render_error(r.error)}});
    }
    requeue_front(self, items, false);
  } else if (items.size() > 1 && error_code(r.error) == errc::invalid_input) {
    // One input of a merged batch was rejected: resend each caller's call
    // alone so that only the bad one fails.
    for (auto& item : items)
      item.solo = true;
    requeue_front(self, items, false);
  } else {
    for (auto& item : items)
      answer(self, item, r); // a failure carries no vectors: cheap copy
  }
}

void dispatch_work(self_ptr self) {
  auto& st = self->state;
  if (st.down || st.view.state == breaker_state::open
      || st.verdicts_pending > 0)
    return;
  while (!st.idle.empty() && !st.queue.empty()) {
    if (st.view.state == breaker_state::half_open && st.permits == 0)
      return; // Wait for the probes.
    auto now = now_ns(self);
    if (!drop_expired_front(self, now) || !paced(self, now))
      return;
    auto idx = st.idle.back();
    st.idle.pop_back();
    auto& slot = st.slots[idx];
    std::size_t inputs = 0;
    auto earliest = take_batch(self, slot, now, inputs);
    send_batch(self, slot, now, earliest, inputs);
  }
}

} // namespace embedrt::detail
