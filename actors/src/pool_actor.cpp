#include "pool_actor.hpp"

#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"

#include <algorithm>
#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <caf/spawn_options.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <functional>
#include <stdexcept>

namespace embedrt::detail {

namespace {

using self_ptr = pool_impl::stateful_pointer<pool_state>;

/// Extra time granted to a connection actor beyond its attempt timeout before
/// the pool considers it stuck (the transport itself closes the socket at the
/// attempt timeout).
constexpr auto stuck_grace = std::chrono::seconds{2};

/// Calls that were held by this many dying connections fail instead of being
/// re-queued again (a poison call must not take the upstream down).
constexpr uint32_t max_crashes_per_call = 2;

/// Refusals with one and the same message, from this many distinct requests
/// in a row (no success in between), make the upstream misconfigured.
constexpr std::size_t misconfigured_after = 5;

int64_t now_ns(self_ptr self) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             self->clock().now().time_since_epoch())
      .count();
}

std::chrono::milliseconds ms_until(int64_t at_ns, int64_t now) {
  return std::chrono::milliseconds{
      std::max<int64_t>(0, (at_ns - now + 999999) / 1000000)};
}

call_result failure(errc code, std::string detail, bool retryable = false,
                    std::chrono::milliseconds retry_after = {}) {
  call_result r;
  r.error = make_error(code, std::move(detail), 0, retry_after);
  r.retryable = retryable;
  r.retry_after_ms = retry_after.count();
  return r;
}

/// The answer while the upstream is down: fail fast, with the time to the
/// probe (never negative).
call_result down_failure(self_ptr self, const std::string& why) {
  auto& st = self->state;
  auto left = st.down_until - self->clock().now().time_since_epoch();
  auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::max(left, caf::timespan{0}));
  return failure(errc::upstream_down, st.env->cfg.name + ": " + why, false,
                 left_ms);
}

std::chrono::milliseconds breaker_time_left(self_ptr self) {
  auto& st = self->state;
  if (st.view.state == breaker_state::half_open)
    return std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min(caf::timespan{st.env->cfg.attempt_timeout},
                 caf::timespan{std::chrono::seconds{1}}));
  return std::max(std::chrono::milliseconds{1},
                  ms_until(st.open_until_ns, now_ns(self)));
}

call_result breaker_failure(self_ptr self) {
  auto& st = self->state;
  auto left = breaker_time_left(self);
  std::string detail = st.env->cfg.name + ": circuit breaker "
      + to_string(st.view.state) + " (" + st.view.reason + "); retry in "
      + std::to_string(left.count()) + " ms";
  return failure(errc::breaker_open, std::move(detail), false, left);
}

void dispatch(self_ptr self);
void arm_watchdog(self_ptr self, int64_t at_ns);

/// Tells the breaker how a call went (no breaker: nothing to do).
void report(self_ptr self, const pool_slot& slot, const call_result& r) {
  auto& st = self->state;
  if (!st.breaker)
    return;
  breaker_outcome out;
  out.epoch = slot.breaker_epoch;
  attempt_facts facts;
  facts.deadline_capped = slot.deadline_capped;
  facts.waited = std::chrono::nanoseconds{
      std::max<int64_t>(r.upstream_ns, now_ns(self) - slot.dispatched_ns)};
  facts.typical = std::chrono::nanoseconds{st.latency_ns};
  out.verdict = judge_call(r, facts, st.env->breaker->cfg);
  out.retry_after_ms = r.retry_after_ms;
  if (out.verdict != call_verdict::failure) {
    self->send(st.breaker, outcome_atom_v, std::move(out));
    return;
  }
  // A failure may open the breaker: dispatching waits for its verdict (one
  // message round trip; only after failures), so with one connection a
  // threshold of N lets exactly N failing calls out, however loaded the
  // machine. A breaker that died answers with an error: go on then too.
  out.what = !r.error ? "slow call"
      : r.timed_out && slot.deadline_capped
      ? "no answer for "
          + std::to_string(
              std::chrono::duration_cast<std::chrono::milliseconds>(
                  facts.waited)
                  .count())
          + " ms (typical " + std::to_string(st.latency_ns / 1000000)
          + " ms): " + render_error(r.error)
      : render_error(r.error);
  ++st.verdicts_pending;
  auto judged = [self] {
    --self->state.verdicts_pending;
    dispatch(self);
  };
  self->request(st.breaker, caf::infinite, outcome_atom_v, std::move(out))
      .then(
          [judged] {
            judged();
          },
          [judged](caf::error&) {
            judged();
          });
}

/// Answers an item and releases its share of the retry budget.
void answer(pool_state& st, pool_item& item, call_result r) {
  st.budget.release(item.call.is_retry);
  item.rp.deliver(std::move(r));
}

void answer(self_ptr self, pool_item& item, call_result r) {
  answer(self->state, item, std::move(r));
}

void spawn_slot(self_ptr self, uint32_t idx) {
  auto& st = self->state;
  connection_actor hdl;
  if (st.env->connection_behavior) {
    using factory = decltype(st.env->connection_behavior);
    hdl = self->spawn<caf::monitored>(
        [](connection_impl::pointer conn, const factory& fn) {
          return fn(conn);
        },
        st.env->connection_behavior);
  } else {
    hdl = self->spawn<caf::monitored>(connection_actor_fn, st.env->conn_env);
  }
  st.children->push_back(hdl);
  auto& slot = st.slots[idx];
  slot.hdl = hdl;
  slot.st = pool_slot::state::idle;
  slot.call_id = 0;
  slot.batch.clear();
  slot.socket_open = false;
  st.idle.push_back(idx);
  if (st.env->on_connection_spawned)
    st.env->on_connection_spawned(hdl);
}

/// Puts items back at the front of the queue, keeping their order.
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

bool compatible(const pool_item& a, const pool_item& b) {
  // One upstream request holds texts or token arrays, never both.
  return !b.solo && a.call.inputs.empty() == b.call.inputs.empty()
      && a.call.model == b.call.model && a.call.dimensions == b.call.dimensions
      && a.call.user == b.call.user;
}

/// A merged call succeeded: each caller gets the vectors of its own inputs
/// and its share of the usage (by its estimated tokens; exact counts for
/// token arrays).
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

/// A call failed: re-batch, resend alone, or answer the callers.
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

/// Tells a refusal of bad input from an upstream that refuses everything:
/// the same message for distinct requests, with no success in between, is
/// the upstream's (misconfigured: a wrong port or scheme, a parameter it
/// never takes); its refusals become `upstream_error` 502, which the breaker
/// counts and readiness reports. Any success ends it.
void judge_refusal(self_ptr self, const std::vector<pool_item>& items,
                   call_result& r) {
  auto& st = self->state;
  if (!r.error) {
    if (st.misconfigured)
      log(log_level::info, "upstream_refusals_ended",
          {{"upstream", st.env->cfg.name}});
    st.misconfigured = false;
    st.refusal.clear();
    st.refusal_requests.clear();
    return;
  }
  if (error_code(r.error) != errc::invalid_input || r.too_large
      || r.base64_refused || r.names_param || items.size() != 1)
    return; // Not a refusal of one caller's call as it stands, or one that
            // points at a part of it (`param`: the input, `dimensions`...).
  auto msg = error_detail(r.error);
  if (msg != st.refusal) {
    st.refusal = msg;
    st.refusal_requests.clear();
  }
  // The service names every request; a call without a name cannot be told
  // apart from another one's, so it never counts.
  const auto& id = items.front().call.request_id;
  if (id.empty())
    return;
  auto& seen = st.refusal_requests;
  if (seen.size() < misconfigured_after
      && std::find(seen.begin(), seen.end(), id) == seen.end())
    seen.push_back(id);
  if (seen.size() < misconfigured_after)
    return;
  if (!st.misconfigured) {
    st.misconfigured = true;
    log(log_level::error, "upstream_misconfigured",
        {{"upstream", st.env->cfg.name},
         {"refusals", std::to_string(seen.size())},
         {"error", msg}});
  }
  r.error = make_error(errc::upstream_error,
                       msg
                           + " (the upstream refuses every request this way: "
                             "its configuration, not the input)",
                       502);
  r.retryable = false;
  r.request_level = true;
}

/// Calls in flight (busy slots).
uint32_t busy_calls(const pool_state& st) {
  uint32_t n = 0;
  for (const auto& slot : st.slots)
    n += slot.st == pool_slot::state::busy && slot.call_id != 0 ? 1 : 0;
  return n;
}

/// The slot holding call `call_id`, or nullptr (the slot died meanwhile and
/// its work was re-queued, or the watchdog gave up on it).
pool_slot* busy_slot(self_ptr self, uint64_t call_id, uint32_t& idx) {
  auto& slots = self->state.slots;
  for (idx = 0; idx < slots.size(); ++idx)
    if (slots[idx].st == pool_slot::state::busy
        && slots[idx].call_id == call_id)
      return &slots[idx];
  return nullptr;
}

/// The health check's verdict (or a call's success): logged when it
/// changes the upstream's health.
void set_health(self_ptr self, bool ok, const std::string& why) {
  auto& st = self->state;
  if (ok == !st.unhealthy) {
    if (!ok)
      st.unhealthy_reason = why;
    return;
  }
  st.unhealthy = !ok;
  st.unhealthy_reason = ok ? std::string{} : why;
  if (ok)
    log(log_level::info, "upstream_healthy",
        {{"upstream", st.env->cfg.name}, {"by", why}});
  else
    log(log_level::error, "upstream_unhealthy",
        {{"upstream", st.env->cfg.name}, {"reason", why}});
}

/// A connection answered a call.
void on_result(self_ptr self, call_result& r) {
  auto& st = self->state;
  uint32_t idx = 0;
  auto* slot = busy_slot(self, r.call_id, idx);
  if (slot == nullptr)
    return;
  auto items = std::move(slot->batch);
  slot->batch.clear();
  slot->call_id = 0;
  pacing_answered(st.pacing, r, slot->deadline_capped, busy_calls(st) + 1,
                  st.next_call_id, now_ns(self));
  judge_refusal(self, items, r);
  report(self, *slot, r);
  record_pool_call(st.metrics, st.env->cfg.name, r, items);
  ++st.upstream_calls;
  if (r.connected)
    ++st.connects;
  if (r.reused)
    ++st.reuses;
  slot->st = pool_slot::state::idle;
  slot->socket_open = r.open_after;
  slot->restarts = 0;
  st.idle.push_back(idx);
  {
    auto took = now_ns(self) - slot->dispatched_ns;
    auto n = static_cast<double>(items.size());
    if (st.service_ns == 0) {
      st.service_ns = std::max<int64_t>(1, took);
      st.calls_per_dispatch = n;
    } else {
      st.service_ns
          = std::max<int64_t>(1, st.service_ns + (took - st.service_ns) / 8);
      st.calls_per_dispatch += (n - st.calls_per_dispatch) / 8;
    }
  }
  if (!r.error && r.upstream_ns > 0)
    // EWMA with weight 1/8: follows a change within a few dozen calls.
    st.latency_ns = st.latency_ns == 0
        ? r.upstream_ns
        : st.latency_ns + (r.upstream_ns - st.latency_ns) / 8;
  if (!r.error && st.unhealthy)
    set_health(self, true, "a call succeeded");
  if (r.error) {
    on_failed_call(self, *slot, items, r);
  } else if (items.size() == 1) {
    st.down_count = 0;
    answer(self, items.front(), std::move(r));
  } else {
    st.down_count = 0;
    split_result(self, items, r);
  }
  dispatch(self);
}

/// A connection actor neither answered nor died by its call's attempt
/// timeout plus grace: the upstream did not answer. It is killed (the down
/// handler restarts the slot) and its work is re-queued.
void on_stuck(self_ptr self, uint32_t idx) {
  auto& st = self->state;
  auto& slot = st.slots[idx];
  log(log_level::warn, "connection_stuck",
      {{"upstream", st.env->cfg.name}, {"slot", std::to_string(idx)}});
  call_result r;
  r.error
      = make_error(errc::connection_failed,
                   st.env->cfg.name + ": no answer within the attempt timeout");
  r.timed_out = true;
  report(self, slot, r);
  pacing_lost(st.pacing, slot.call_id, true, st.next_call_id);
  requeue_front(self, slot.batch, true);
  slot.call_id = 0;
  self->send_exit(slot.hdl, caf::exit_reason::kill);
}

void arm_watchdog(self_ptr self, int64_t at_ns) {
  auto& st = self->state;
  if (st.watchdog_at != 0 && st.watchdog_at <= at_ns)
    return; // Armed early enough.
  st.watchdog_at = at_ns;
  auto wait = caf::timespan{std::max<int64_t>(0, at_ns - now_ns(self))};
  self->delayed_send(self, wait, watchdog_atom_v, at_ns);
}

/// Answers every queued call whose deadline has passed (wherever it is in
/// the queue: deadlines are not in queue order); returns the earliest
/// deadline left in the queue (0: none).
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

/// The pool's one timer: answers the queued calls whose deadline has passed,
/// kills the connections stuck by now, and re-arms for the earliest of the
/// deadlines still queued and the stuck times of the calls in flight.
void on_watchdog(self_ptr self, int64_t at_ns) {
  auto& st = self->state;
  if (at_ns != st.watchdog_at)
    return; // Stale: re-armed for an earlier time meanwhile.
  st.watchdog_at = 0;
  auto now = now_ns(self);
  if (now < at_ns)
    return; // Fired early: only a test clock does that, when it shuts down.
  for (uint32_t idx = 0; idx < st.slots.size(); ++idx) {
    auto& slot = st.slots[idx];
    if (slot.st == pool_slot::state::busy && slot.call_id != 0
        && slot.stuck_at_ns <= now)
      on_stuck(self, idx);
  }
  int64_t next = expire_queued(self, now);
  for (const auto& slot : st.slots)
    if (slot.st == pool_slot::state::busy && slot.call_id != 0
        && (next == 0 || slot.stuck_at_ns < next))
      next = slot.stuck_at_ns;
  if (next != 0)
    arm_watchdog(self, next);
  dispatch(self);
}

/// Fails every queued call (the breaker opened or the upstream went down).
void fail_queue(pool_state& st, const call_result& why) {
  while (!st.queue.empty()) {
    auto item = std::move(st.queue.front());
    st.queue.pop_front();
    st.queue_bytes -= item.bytes;
    answer(st, item, why);
  }
}

void go_down(self_ptr self) {
  auto& st = self->state;
  auto& sup = st.env->cfg.supervision;
  st.down = true;
  ++st.epoch;
  auto wait = doubling_backoff(sup.down_backoff, sup.down_backoff_cap,
                               st.down_count++);
  st.down_until = self->clock().now().time_since_epoch() + wait;
  log(log_level::error, "upstream_down",
      {{"upstream", st.env->cfg.name},
       {"restarts", std::to_string(st.intensity.recent())},
       {"probe_in_ms", std::to_string(wait.count())}});
  fail_queue(st,
             down_failure(self,
                          "upstream marked down (restart "
                          "intensity exceeded)"));
  self->delayed_send(self, wait, probe_atom_v, st.epoch);
}

/// Spawns the breaker. A breaker that replaces a dead one resumes from the
/// last view the pool holds: open stays open until its time, half-open
/// probes again, and its epoch moves on so outcomes of the old one are stale.
void spawn_breaker(self_ptr self) {
  auto& st = self->state;
  if (!st.env->breaker)
    return;
  std::optional<breaker_view> resume;
  if (st.breaker) {
    breaker_view v = st.view;
    if (v.state == breaker_state::open)
      v.open_for = caf::timespan{
          std::max<int64_t>(0, st.open_until_ns - now_ns(self))};
    resume = std::move(v);
  }
  st.breaker = self->spawn<caf::monitored>(breaker_actor_fn, st.env->breaker,
                                           self->address(), std::move(resume));
  *st.breaker_box = st.breaker;
  if (st.env->on_breaker_spawned)
    st.env->on_breaker_spawned(st.breaker);
}

/// Records a breaker transition (metrics) when a view changes the state.
void record_transition(self_ptr self, breaker_state from, breaker_state to) {
  if (from == to)
    return;
  static_assert(static_cast<uint8_t>(breaker_state::open) == breaker_open
                && static_cast<uint8_t>(breaker_state::half_open)
                    == breaker_half_open);
  record_breaker_transition(self->state.metrics, self->state.env->cfg.name,
                            static_cast<uint8_t>(from),
                            static_cast<uint8_t>(to));
}

void on_breaker_view(self_ptr self, breaker_view& v) {
  auto& st = self->state;
  if (v.epoch == st.view.epoch) {
    // More probe permits within the same half-open period.
    if (v.state == breaker_state::half_open)
      st.permits += v.permits;
  } else if (v.epoch > st.view.epoch) {
    record_transition(self, st.view.state, v.state);
    st.view = std::move(v);
    st.open_until_ns = st.view.state == breaker_state::open
        ? now_ns(self) + st.view.open_for.count()
        : 0;
    st.permits
        = st.view.state == breaker_state::half_open ? st.view.permits : 0;
    if (st.view.state == breaker_state::open)
      fail_queue(st, breaker_failure(self));
  }
  dispatch(self);
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

/// Whether callers should be routed here now: not down, breaker not open,
/// health check not failing, not misconfigured.
bool available(const pool_state& st) {
  return !st.down && st.view.state != breaker_state::open && !st.unhealthy
      && !st.misconfigured;
}

/// Tells the watcher (the service) when the availability changed.
void publish_availability(self_ptr self, bool force = false) {
  auto& st = self->state;
  auto now = available(st);
  if (!st.watcher || (!force && now == st.told_available))
    return;
  st.told_available = now;
  if (auto w = caf::actor_cast<pool_watcher>(st.watcher))
    self->send(w, avail_atom_v, now);
}

void dispatch_work(self_ptr self);

/// Hands queued work to idle connections, then tells the watcher if the
/// availability changed (every state change ends here).
void dispatch(self_ptr self) {
  dispatch_work(self);
  publish_availability(self);
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

void on_pace_timer(self_ptr self, int64_t at_ns) {
  auto& p = self->state.pacing;
  if (at_ns != p.timer_at)
    return; // Stale: re-armed for an earlier time meanwhile.
  p.timer_at = 0;
  dispatch(self);
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

// -- message handlers -------------------------------------------------------

/// The tokens a call counts for in a batch: the request actor's estimate,
/// carried in the call. At least 1, so that a learned token cap always makes
/// the next batch smaller.
std::size_t item_tokens(const upstream_call& call) {
  return static_cast<std::size_t>(std::max<int64_t>(1, call.tokens));
}

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

caf::result<call_result> on_call(self_ptr self, upstream_call& call) {
  auto& st = self->state;
  if (!st.env->crash_marker.empty())
    for (auto& in : call.inputs)
      if (in == st.env->crash_marker)
        throw std::runtime_error("chaos: pool crash marker received");
  if (st.down)
    return down_failure(self, "upstream is down");
  if (st.view.state == breaker_state::open
      || (st.view.state == breaker_state::half_open
          && st.permits <= st.queue.size()))
    return breaker_failure(self);
  pool_item item;
  for (auto& in : call.inputs)
    item.bytes += in.size();
  for (auto& ids : call.token_inputs)
    item.bytes += token_array_bytes(ids.size());
  item.tokens = item_tokens(call);
  if (st.queue.size() >= st.env->cfg.max_queue
      || st.queue_bytes + item.bytes > st.env->cfg.max_queue_bytes) {
    ++st.rejected;
    return failure(errc::overloaded,
                   st.env->cfg.name + ": queue full ("
                       + std::to_string(st.queue.size()) + " calls, "
                       + std::to_string(st.queue_bytes) + " bytes)");
  }
  if (call.budget.count() > 0) {
    auto now = now_ns(self);
    auto done_in = expected_completion_ns(self, call, now)
        + pacing_admission_ns(st.pacing, st.queue.size(),
                              static_cast<int64_t>(item.tokens), now);
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
  }
  if (!st.budget.try_admit(call.is_retry)) {
    ++st.rejected;
    record_retry_budget_rejection(st.metrics, st.env->cfg.name);
    return failure(errc::overloaded,
                   st.env->cfg.name + ": retry budget exhausted");
  }
  item.enqueued_ns = now_ns(self);
  if (call.budget.count() > 0)
    item.deadline_ns = item.enqueued_ns + call.budget.count();
  item.call = std::move(call);
  item.rp = self->make_response_promise<call_result>();
  auto rp = item.rp;
  auto deadline = item.deadline_ns;
  st.queue_bytes += item.bytes;
  st.queue.emplace_back(std::move(item));
  dispatch(self);
  // The pool answers every call by its deadline (callers send with
  // `infinite`): one sent at once is bounded by its attempt timeout, which
  // is capped at the deadline; one left queued by the watchdog, armed for
  // the earliest queued deadline (with deadlines in arrival order, one timer
  // for many calls: a later deadline never re-arms it).
  if (deadline != 0 && !st.queue.empty())
    arm_watchdog(self, deadline);
  return rp;
}

upstream_health on_health(self_ptr self) {
  auto& st = self->state;
  upstream_health h;
  h.name = st.env->cfg.name;
  h.base_url = st.env->cfg.base_url;
  h.state = st.down                               ? "down"
      : st.view.state == breaker_state::open      ? "breaker_open"
      : st.view.state == breaker_state::half_open ? "half_open"
      : st.misconfigured                          ? "misconfigured"
      : st.unhealthy                              ? "unhealthy"
                                                  : "up";
  for (auto& slot : st.slots) {
    if (slot.st != pool_slot::state::dead)
      ++h.connections;
    if (slot.st == pool_slot::state::busy
        || (slot.st == pool_slot::state::idle && slot.socket_open))
      ++h.sockets;
  }
  h.idle_connections = static_cast<int32_t>(st.idle.size());
  h.queued_requests = static_cast<int32_t>(st.queue.size());
  h.upstream_calls = st.upstream_calls;
  h.connects = st.connects;
  h.reuses = st.reuses;
  h.restarts = st.restarts;
  h.rejected = st.rejected;
  h.concurrency_limit = pacing_limit(st.pacing, st.env->cfg.connections);
  h.pacing_holds = st.pacing.holds;
  h.pacing_held_ns = st.pacing.held_ns
      + (st.pacing.held_since != 0 ? now_ns(self) - st.pacing.held_since : 0);
  return h;
}

void on_restart(self_ptr self, uint32_t idx, uint64_t epoch) {
  auto& st = self->state;
  if (epoch != st.epoch || st.down || idx >= st.slots.size()
      || st.slots[idx].st != pool_slot::state::dead)
    return;
  spawn_slot(self, idx);
  dispatch(self);
}

void on_probe(self_ptr self, uint64_t epoch) {
  auto& st = self->state;
  if (epoch != st.epoch || !st.down)
    return;
  st.down = false;
  st.intensity.reset();
  for (uint32_t i = 0; i < st.slots.size(); ++i)
    if (st.slots[i].st == pool_slot::state::dead) {
      st.slots[i].restarts = 0;
      spawn_slot(self, i);
    }
  log(log_level::info, "upstream_up", {{"upstream", st.env->cfg.name}});
  dispatch(self);
}

/// The breaker died (a bug): a fresh one resumes from the pool's view.
void on_breaker_down(self_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  log(log_level::error, "breaker_down",
      {{"upstream", st.env->cfg.name},
       {"state", to_string(st.view.state)},
       {"reason", caf::to_string(dm.reason)}});
  spawn_breaker(self);
}

/// Spawns the active health check, if configured (it checks at once).
void spawn_checker(self_ptr self) {
  auto& st = self->state;
  if (st.env->cfg.health_check_interval.count() <= 0)
    return;
  st.checker
      = self->spawn<caf::monitored>(health_check_fn, st.env, self->address());
  *st.checker_box = st.checker;
}

/// A connection died: its work goes back to the queue and the slot restarts
/// after a backoff, unless that exceeds the restart intensity (down).
void on_connection_down(self_ptr self, uint32_t idx, const caf::down_msg& dm) {
  auto& st = self->state;
  auto& slot = st.slots[idx];
  if (slot.call_id != 0)
    pacing_lost(st.pacing, slot.call_id, false, st.next_call_id);
  requeue_front(self, slot.batch, true);
  slot.call_id = 0;
  slot.st = pool_slot::state::dead;
  slot.socket_open = false;
  st.children->erase(
      std::remove(st.children->begin(), st.children->end(), slot.hdl),
      st.children->end());
  slot.hdl = nullptr;
  st.idle.erase(std::remove(st.idle.begin(), st.idle.end(), idx),
                st.idle.end());
  log(log_level::warn, "connection_down",
      {{"upstream", st.env->cfg.name},
       {"slot", std::to_string(idx)},
       {"reason", caf::to_string(dm.reason)}});
  if (st.down)
    return; // The probe respawns every dead slot.
  auto now = restart_intensity::time_point{
      std::chrono::duration_cast<restart_intensity::time_point::duration>(
          self->clock().now().time_since_epoch())};
  if (!st.intensity.record(now)) {
    go_down(self);
    return;
  }
  ++st.restarts;
  auto& sup = st.env->cfg.supervision;
  auto wait = doubling_backoff(sup.restart_backoff, sup.restart_backoff_cap,
                               slot.restarts++);
  self->delayed_send(self, wait, restart_atom_v, idx, st.epoch);
}

void on_down(self_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  for (uint32_t idx = 0; idx < st.slots.size(); ++idx)
    if (st.slots[idx].hdl && st.slots[idx].hdl.address() == dm.source) {
      on_connection_down(self, idx, dm);
      dispatch(self);
      return;
    }
  if (st.breaker && st.breaker.address() == dm.source)
    on_breaker_down(self, dm);
  else if (st.checker && st.checker.address() == dm.source)
    spawn_checker(self);
}

} // namespace

pool_state::~pool_state() {
  // Every held call gets its one answer, however the pool ended.
  auto why = stop_reason ? stop_reason
                         : make_error(errc::upstream_down,
                                      (env ? env->cfg.name : std::string{})
                                          + ": pool ended unexpectedly");
  call_result r;
  r.error = why;
  fail_queue(*this, r);
  for (auto& slot : slots)
    for (auto& item : slot.batch)
      answer(*this, item, r);
}

pool_impl::behavior_type
pool_actor_fn(pool_impl::stateful_pointer<pool_state> self,
              std::shared_ptr<const pool_env> env) {
  auto& st = self->state;
  st.env = env;
  st.metrics = env->metrics;
  st.budget
      = retry_budget{env->retry.budget_ratio, env->retry.budget_min_retries};
  st.intensity = restart_intensity{env->cfg.supervision.max_restarts,
                                   env->cfg.supervision.within};
  // When the pool ends, its connections end with it (closing their sockets)
  // instead of lingering until their pending exchanges complete.
  self->attach_functor([children = st.children, breaker = st.breaker_box,
                        checker = st.checker_box](const caf::error&) {
    for (auto& c : *children)
      caf::anon_send_exit(c, caf::exit_reason::user_shutdown);
    if (*breaker)
      caf::anon_send_exit(*breaker, caf::exit_reason::user_shutdown);
    if (*checker)
      caf::anon_send_exit(*checker, caf::exit_reason::user_shutdown);
  });
  // Stopped (its supervisor's exit message): every held call is answered
  // `cancelled` by the state's destructor.
  self->set_exit_handler([self](caf::exit_msg& em) {
    auto& st = self->state;
    st.stop_reason = make_error(errc::cancelled,
                                st.env->cfg.name + ": upstream pool stopped ("
                                    + caf::to_string(em.reason) + ")");
    self->quit(em.reason);
  });
  // Crashed (a bug): held calls get `upstream_down`, so callers fail over at
  // once; the service restarts the pool.
  self->set_exception_handler([self](caf::scheduled_actor*,
                                     std::exception_ptr&) -> caf::error {
    auto& st = self->state;
    st.stop_reason = make_error(errc::upstream_down,
                                st.env->cfg.name + ": upstream pool crashed");
    log(log_level::error, "pool_crashed", {{"upstream", st.env->cfg.name}});
    return caf::exit_reason::unhandled_exception;
  });
  // The breaker's first view has epoch 1 and state closed.
  st.view.epoch = 1;
  spawn_breaker(self);
  st.slots.resize(std::max<uint32_t>(1, env->cfg.connections));
  for (uint32_t i = 0; i < st.slots.size(); ++i)
    spawn_slot(self, i);
  spawn_checker(self);
  pacing_init(st.pacing, env->cfg, now_ns(self));
  self->set_down_handler([self](caf::down_msg& dm) {
    on_down(self, dm);
  });
  return {
      [self](call_atom, upstream_call& call) {
        return on_call(self, call);
      },
      [self](health_atom) {
        return on_health(self);
      },
      [self](sink_atom, metrics_actor& sink) {
        self->state.metrics = std::move(sink);
      },
      [self](watch_atom, pool_watcher& w) {
        self->state.watcher = w.address();
        publish_availability(self, true);
      },
      [self](checked_atom, bool ok, std::string& why) {
        set_health(self, ok, why);
        publish_availability(self);
      },
      [self](breaker_atom, breaker_view& v) {
        on_breaker_view(self, v);
      },
      [self](result_atom, call_result& r) {
        on_result(self, r);
      },
      [self](restart_atom, uint32_t idx, uint64_t epoch) {
        on_restart(self, idx, epoch);
      },
      [self](probe_atom, uint64_t epoch) {
        on_probe(self, epoch);
      },
      [self](watchdog_atom, int64_t at_ns) {
        on_watchdog(self, at_ns);
      },
      [self](pace_atom, int64_t at_ns) {
        on_pace_timer(self, at_ns);
      },
  };
}

} // namespace embedrt::detail
