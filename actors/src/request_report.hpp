// What a request actor tells the world about its request: the log lines
// (logfmt, each with the caller's request id and the upstream's x-request-id
// when known) and the one metrics event at its reply. Kept out of
// request_actor.cpp so the request actor only calls two functions.
#pragma once

#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"
#include "metrics_actor.hpp"

#include <caf/local_actor.hpp>
#include <string>

namespace embedrt::detail {

/// Called for every attempt result of chunk `idx`, before it is handled:
/// keeps the upstream's x-request-id and logs a failed attempt (debug).
template <class State>
void note_attempt(const State& st, std::string& upstream_request_id,
                  uint32_t idx, const call_result& r) {
  if (!r.upstream_request_id.empty())
    upstream_request_id = r.upstream_request_id;
  if (!r.error || !log_enabled(log_level::debug))
    return;
  const auto& c = st.chunks[idx];
  log(log_level::debug, "attempt_failed",
      {{"request_id", st.req.request_id},
       {"upstream", st.routes[c.route].name},
       {"upstream_request_id", r.upstream_request_id},
       {"attempt", std::to_string(c.attempts)},
       {"retryable", r.retryable ? "true" : "false"},
       {"error", render_error(r.error)}});
}

/// Called once, when the request actor replies (`err`: none = success).
template <class State>
void report_request(caf::local_actor* self, const State& st,
                    const std::string& upstream_request_id,
                    const caf::error& err) {
  // The upstream that answered, else the last one tried, else none.
  std::string upstream = st.result.upstream;
  uint32_t retries = 0;
  for (const auto& c : st.chunks) {
    if (c.attempts > 1)
      retries += c.attempts - 1;
    if (upstream.empty() && c.attempts > 0 && c.route < st.routes.size())
      upstream = st.routes[c.route].name;
  }
  auto arrived = st.deadline - st.timeout;
  record_request(self, st.env->metrics, upstream, st.req.model, err,
                 input_count(st.req), arrived, retries);
  if (!log_enabled(log_level::debug))
    return;
  auto ms
      = std::chrono::duration<double, std::milli>(self->clock().now() - arrived)
            .count();
  if (err)
    log(log_level::debug, "request_failed",
        {{"request_id", st.req.request_id},
         {"upstream", upstream},
         {"upstream_request_id", upstream_request_id},
         {"model", st.req.model},
         {"texts", std::to_string(input_count(st.req))},
         {"retries", std::to_string(retries)},
         {"latency_ms", std::to_string(ms)},
         {"error", render_error(err)}});
  else
    log(log_level::debug, "request_done",
        {{"request_id", st.req.request_id},
         {"upstream", upstream},
         {"upstream_request_id", upstream_request_id},
         {"model", st.req.model},
         {"texts", std::to_string(input_count(st.req))},
         {"retries", std::to_string(retries)},
         {"latency_ms", std::to_string(ms)}});
}

} // namespace embedrt::detail
