#include "breaker.hpp"

#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"

#include <algorithm>
#include <caf/actor_cast.hpp>
#include <caf/send.hpp>
#include <cmath>

namespace embedrt::detail {

using std::chrono::milliseconds;

std::chrono::nanoseconds silence_bound(const breaker_config& cfg,
                                       std::chrono::nanoseconds typical) {
  if (cfg.silent_call_threshold.count() <= 0)
    return std::chrono::nanoseconds{0};
  auto bound = std::chrono::nanoseconds{cfg.silent_call_threshold};
  if (cfg.silent_call_factor > 0.0 && typical.count() > 0)
    bound = std::max(
        bound,
        std::chrono::nanoseconds{static_cast<int64_t>(
            cfg.silent_call_factor * static_cast<double>(typical.count()))});
  return bound;
}

call_verdict judge_call(const call_result& r, const attempt_facts& attempt,
                        const breaker_config& cfg) {
  if (!r.error) {
    if (cfg.slow_call_threshold.count() > 0
        && r.upstream_ns > std::chrono::duration_cast<std::chrono::nanoseconds>(
                               cfg.slow_call_threshold)
                               .count())
      return call_verdict::failure;
    return call_verdict::success;
  }
  switch (error_code(r.error)) {
    case errc::connection_failed:
      // A timeout shortened to the caller's deadline is the caller's,
      // unless the upstream stayed silent far longer than it takes to
      // answer (a black hole).
      if (r.timed_out && attempt.deadline_capped) {
        auto bound = silence_bound(cfg, attempt.typical);
        return bound.count() > 0 && attempt.waited >= bound
            ? call_verdict::failure
            : call_verdict::ignored;
      }
      return call_verdict::failure;
    case errc::tls_failed:
    case errc::invalid_response:
    case errc::rate_limited: return call_verdict::failure;
    case errc::upstream_error: {
      auto status = error_http_status(r.error);
      return status >= 500 || status == 408 ? call_verdict::failure
                                            : call_verdict::ignored;
    }
    default:
      // invalid_input (400/413/422), auth_failed, quota_exceeded, cancelled,
      // deadline_exceeded, overloaded: not the upstream's health.
      return call_verdict::ignored;
  }
}

circuit_breaker::circuit_breaker(breaker_config cfg, uint64_t seed)
    : cfg_(std::move(cfg)),
      rng_(static_cast<std::minstd_rand::result_type>(seed % 2147483646 + 1)),
      window_(std::max<uint32_t>(1, cfg_.window), false) {}

void circuit_breaker::clear_window() {
  std::fill(window_.begin(), window_.end(), false);
  window_pos_ = 0;
  window_calls_ = 0;
  window_failures_ = 0;
  consecutive_ = 0;
  hint_ = milliseconds{0};
}

breaker_transition circuit_breaker::trip(std::string reason) {
  breaker_transition t;
  t.from = state_;
  t.to = breaker_state::open;
  ++trips_;
  auto base = static_cast<double>(cfg_.reset_timeout.count());
  auto cap = static_cast<double>(
      std::max(cfg_.max_reset_timeout, cfg_.reset_timeout).count());
  auto backoff = std::min(
      cap, base * std::ldexp(1.0, static_cast<int>(std::min(trips_ - 1, 30u))));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  backoff *= 1.0 + std::max(0.0, cfg_.jitter) * u(rng_);
  auto open_for = milliseconds{static_cast<int64_t>(backoff)};
  auto hint = std::min(hint_, cfg_.max_retry_after);
  if (hint > open_for) {
    open_for = hint;
    reason += "; upstream asked to retry after " + std::to_string(hint.count())
        + " ms";
  }
  t.open_for = open_for;
  t.reason = std::move(reason);
  state_ = breaker_state::open;
  probe_successes_ = 0;
  clear_window();
  return t;
}

uint32_t circuit_breaker::run_to_open() const {
  auto need = cfg_.consecutive_failures;
  if (cfg_.random_run_odds <= 0.0 || cfg_.random_run_odds >= 1.0)
    return need;
  // The window's calls before the current run (which ends with a success,
  // unless the run fills the whole window).
  auto in_run = std::min(consecutive_, window_calls_);
  auto failures = window_failures_ - in_run;
  if (failures == 0)
    return need;
  auto rate = static_cast<double>(failures)
      / static_cast<double>(window_calls_ - in_run);
  // rate^k <= odds  <=>  k >= ln(odds) / ln(rate)  (rate < 1 here).
  auto k = std::ceil(std::log(cfg_.random_run_odds) / std::log(rate));
  return std::max(need, static_cast<uint32_t>(std::min(k, 1e6)));
}

std::optional<breaker_transition>
circuit_breaker::record(call_verdict v, milliseconds retry_after,
                        const std::string& what) {
  if (v == call_verdict::ignored || state_ == breaker_state::open)
    return std::nullopt;
  bool failed = v == call_verdict::failure;
  if (failed)
    hint_ = std::max(hint_, retry_after);
  if (state_ == breaker_state::half_open) {
    if (failed)
      return trip("probe failed: " + what);
    if (++probe_successes_ < std::max<uint32_t>(1, cfg_.half_open_probes))
      return std::nullopt;
    breaker_transition t;
    t.from = breaker_state::half_open;
    t.to = breaker_state::closed;
    t.reason = std::to_string(probe_successes_) + " probe"
        + (probe_successes_ == 1 ? "" : "s") + " succeeded";
    state_ = breaker_state::closed;
    trips_ = 0;
    probe_successes_ = 0;
    clear_window();
    return t;
  }
  // Closed: count-based sliding window plus consecutive failures.
  if (window_calls_ == window_.size()) {
    if (window_[window_pos_])
      --window_failures_;
  } else {
    ++window_calls_;
  }
  window_[window_pos_] = failed;
  if (failed)
    ++window_failures_;
  window_pos_ = static_cast<uint32_t>((window_pos_ + 1) % window_.size());
  if (!failed) {
    consecutive_ = 0;
    hint_ = milliseconds{0};
    return std::nullopt;
  }
  ++consecutive_;
  if (cfg_.consecutive_failures > 0 && consecutive_ >= run_to_open())
    return trip(std::to_string(consecutive_)
                + " consecutive failures, last: " + what);
  if (cfg_.failure_rate > 0.0 && window_calls_ >= std::max(1u, cfg_.min_calls)
      && static_cast<double>(window_failures_)
          >= cfg_.failure_rate * static_cast<double>(window_calls_))
    return trip("failure rate " + std::to_string(window_failures_) + "/"
                + std::to_string(window_calls_) + ", last: " + what);
  return std::nullopt;
}

void circuit_breaker::resume(breaker_state state, uint32_t trips) {
  clear_window();
  state_ = state;
  trips_ = state == breaker_state::closed ? 0 : trips;
  probe_successes_ = 0;
}

std::optional<breaker_transition> circuit_breaker::open_time_over() {
  if (state_ != breaker_state::open)
    return std::nullopt;
  breaker_transition t;
  t.from = breaker_state::open;
  t.to = breaker_state::half_open;
  t.reason = "open time over, probing";
  state_ = breaker_state::half_open;
  probe_successes_ = 0;
  return t;
}

namespace {

using self_ptr = breaker_impl::stateful_pointer<breaker_actor_state>;

void publish(self_ptr self, breaker_view view) {
  if (auto hdl = caf::actor_cast<breaker_listener>(self->state.listener))
    self->send(hdl, breaker_atom_v, std::move(view));
}

void apply(self_ptr self, const breaker_transition& t) {
  auto& st = self->state;
  auto& view = st.view;
  ++view.epoch;
  view.state = t.to;
  view.reason = t.reason;
  view.permits = 0;
  view.open_for = caf::timespan{0};
  view.trips = st.machine->trips();
  st.permits_out = 0;
  ++st.transitions[static_cast<int>(t.from)][static_cast<int>(t.to)];
  if (t.to == breaker_state::open) {
    view.open_for = t.open_for;
    self->delayed_send(self, t.open_for, half_open_atom_v, view.epoch);
  } else if (t.to == breaker_state::half_open) {
    view.permits = std::max<uint32_t>(1, st.env->cfg.half_open_probes);
    st.permits_out = view.permits;
  }
  log(t.to == breaker_state::open ? log_level::warn : log_level::info,
      "breaker_transition",
      {{"upstream", st.env->upstream},
       {"from", to_string(t.from)},
       {"to", to_string(t.to)},
       {"open_ms", std::to_string(t.open_for.count())},
       {"trips", std::to_string(st.machine->trips())},
       {"reason", t.reason}});
  if (st.env->on_transition)
    st.env->on_transition(st.env->upstream, t);
  publish(self, view);
}

/// Takes over from a breaker that died: its last view, at the next epoch.
void resume_from(self_ptr self, breaker_view last) {
  auto& st = self->state;
  st.machine->resume(last.state, last.trips);
  st.view = std::move(last);
  ++st.view.epoch;
  st.view.permits = 0;
  st.permits_out = 0;
  if (st.view.state == breaker_state::open) {
    self->delayed_send(self, st.view.open_for, half_open_atom_v, st.view.epoch);
  } else {
    st.view.open_for = caf::timespan{0};
    if (st.view.state == breaker_state::half_open) {
      st.view.permits = std::max<uint32_t>(1, st.env->cfg.half_open_probes);
      st.permits_out = st.view.permits;
    }
  }
  log(log_level::warn, "breaker_resumed",
      {{"upstream", st.env->upstream},
       {"state", to_string(st.view.state)},
       {"open_ms",
        std::to_string(
            std::chrono::duration_cast<milliseconds>(st.view.open_for)
                .count())},
       {"trips", std::to_string(st.view.trips)}});
}

} // namespace

breaker_impl::behavior_type
breaker_actor_fn(breaker_impl::stateful_pointer<breaker_actor_state> self,
                 std::shared_ptr<const breaker_env> env,
                 caf::actor_addr listener, std::optional<breaker_view> resume) {
  auto& st = self->state;
  st.env = env;
  st.machine.emplace(env->cfg, env->seed);
  st.listener = std::move(listener);
  st.view.epoch = 1;
  if (resume)
    resume_from(self, std::move(*resume));
  publish(self, st.view);
  return {
      [self](outcome_atom, breaker_outcome& out) {
        auto& st = self->state;
        if (out.epoch != st.view.epoch)
          return; // Dispatched before the last transition.
        if (st.view.state == breaker_state::half_open
            && out.verdict == call_verdict::ignored) {
          // The probe told nothing: let another one go.
          breaker_view more = st.view;
          more.permits = 1;
          publish(self, std::move(more));
          return;
        }
        if (auto t = st.machine->record(
                out.verdict, milliseconds{out.retry_after_ms}, out.what))
          apply(self, *t);
      },
      [self](half_open_atom, uint64_t epoch) {
        auto& st = self->state;
        if (epoch != st.view.epoch)
          return; // A timer of an earlier open period.
        if (auto t = st.machine->open_time_over())
          apply(self, *t);
      },
      [self](health_atom) {
        return self->state.view;
      },
  };
}

} // namespace embedrt::detail
