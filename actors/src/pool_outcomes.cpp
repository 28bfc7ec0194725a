#include "embedrt/log.hpp"
#include "pool_detail.hpp"

#include <algorithm>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

namespace embedrt::detail {

namespace {

/// Refusals with one and the same message, from this many distinct requests
/// in a row (no success in between), make the upstream misconfigured.
constexpr std::size_t misconfigured_after = 5;

std::chrono::milliseconds ms_until(int64_t at_ns, int64_t now) {
  return std::chrono::milliseconds{
      std::max<int64_t>(0, (at_ns - now + 999999) / 1000000)};
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

} // namespace

call_result failure(errc code, std::string detail, bool retryable,
                    std::chrono::milliseconds retry_after) {
  call_result r;
  r.error = make_error(code, std::move(detail), 0, retry_after);
  r.retryable = retryable;
  r.retry_after_ms = retry_after.count();
  return r;
}

call_result down_failure(self_ptr self, const std::string& why) {
  auto& st = self->state;
  auto left = st.down_until - self->clock().now().time_since_epoch();
  auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::max(left, caf::timespan{0}));
  return failure(errc::upstream_down, st.env->cfg.name + ": " + why, false,
                 left_ms);
}

call_result breaker_failure(self_ptr self) {
  auto& st = self->state;
  auto left = breaker_time_left(self);
  std::string detail = st.env->cfg.name + ": circuit breaker "
      + to_string(st.view.state) + " (" + st.view.reason + "); retry in "
      + std::to_string(left.count()) + " ms";
  return failure(errc::breaker_open, std::move(detail), false, left);
}

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

void answer(pool_state& st, pool_item& item, call_result r) {
  st.budget.release(item.budgeted_retry);
  item.rp.deliver(std::move(r));
}

void answer(self_ptr self, pool_item& item, call_result r) {
  answer(self->state, item, std::move(r));
}

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

} // namespace embedrt::detail
