#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"
#include "pool_detail.hpp"

#include <algorithm>
#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <caf/spawn_options.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <cmath>
#include <stdexcept>

namespace embedrt::detail {

namespace {

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
                  st.next_call_id, now_ns(self),
                  static_cast<int64_t>(slot->tokens));
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
  learn_service_time(st, now_ns(self) - slot->dispatched_ns, items.size());
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

void on_pace_timer(self_ptr self, int64_t at_ns) {
  auto& p = self->state.pacing;
  if (at_ns != p.timer_at)
    return; // Stale: re-armed for an earlier time meanwhile.
  p.timer_at = 0;
  dispatch(self);
}

// -- message handlers -------------------------------------------------------

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
  if (call.budget.count() > 0)
    if (auto refused = late_refusal(self, call, item.tokens))
      return std::move(*refused);
  // A retry after a 429 with Retry-After is the pacer's (it holds every
  // send until then): budgeting it too refused 1 % of the requests under
  // random 429s (app.chaos), each hold letting retries pile up here.
  item.budgeted_retry
      = call.is_retry && !(call.after_rate_limit && st.pacing.pace);
  if (!st.budget.try_admit(item.budgeted_retry)) {
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
  if (st.pacing.limit) {
    h.limit_decreases_overload = st.pacing.limit->decreases_overload();
    h.limit_decreases_latency = st.pacing.limit->decreases_latency();
  }
  h.pacing_held_ns = st.pacing.held_ns
      + (st.pacing.held_since != 0 ? now_ns(self) - st.pacing.held_since : 0);
  if (st.pacing.pace) {
    h.pacing_others_tpm
        = static_cast<int64_t>(std::llround(st.pacing.pace->tokens().others()));
    h.pacing_others_rpm = static_cast<int64_t>(
        std::llround(st.pacing.pace->requests().others()));
  }
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

void dispatch(self_ptr self) {
  dispatch_work(self);
  publish_availability(self);
}

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
        // A check that passed was answered by the upstream (200 or 429):
        // it counts against the rate limits the pool paces to.
        if (ok)
          pacing_charged(self->state.pacing, health_check_tokens(),
                         now_ns(self));
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
