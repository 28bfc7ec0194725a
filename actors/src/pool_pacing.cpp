#include "pool_pacing.hpp"

#include "embedrt/protocol/errc.hpp"

#include <algorithm>
#include <limits>

namespace embedrt::detail {

void pacing_init(pool_pacing& p, const upstream_config& cfg, int64_t now) {
  if (cfg.pacing)
    p.pace.emplace(pacer_config{true, cfg.rpm, cfg.tpm}, now);
  if (cfg.adaptive_concurrency) {
    concurrency_limit_config lc;
    lc.max = std::max<uint32_t>(1, cfg.connections);
    lc.min = std::min(lc.max, std::max<uint32_t>(1, cfg.min_connections));
    p.limit.emplace(lc);
  }
}

int64_t pacing_wait(pool_pacing& p, uint32_t busy, int64_t tokens,
                    int64_t now) {
  if (p.limit && busy >= p.limit->current())
    return -1;
  int64_t wait = p.pace ? p.pace->wait_ns(tokens, now) : 0;
  if (wait > 0) {
    if (p.held_since == 0) {
      p.held_since = now;
      ++p.holds;
    }
    return wait;
  }
  if (p.held_since != 0) {
    p.held_ns += now - p.held_since;
    p.held_since = 0;
  }
  return 0;
}

int64_t pacing_token_cap(pool_pacing& p, int64_t now) {
  if (!p.pace)
    return std::numeric_limits<int64_t>::max();
  return std::max<int64_t>(1, p.pace->tokens_available(now));
}

void pacing_sent(pool_pacing& p, uint64_t call_id, int64_t tokens,
                 int64_t now) {
  if (p.pace)
    p.pace->on_send(call_id, tokens, now);
}

void pacing_charged(pool_pacing& p, int64_t tokens, int64_t now) {
  if (p.pace)
    p.pace->charge(tokens, now);
}

namespace {

rate_hint hint_of(const call_result& r) {
  rate_hint h;
  h.limit_requests = r.ratelimit_limit_requests;
  h.limit_tokens = r.ratelimit_limit_tokens;
  h.remaining_requests = r.ratelimit_remaining_requests;
  h.remaining_tokens = r.ratelimit_remaining_tokens;
  h.reset_requests_ns = r.ratelimit_reset_requests_ns;
  h.reset_tokens_ns = r.ratelimit_reset_tokens_ns;
  return h;
}

limit_sample sample_of(const call_result& r, bool deadline_capped) {
  if (!r.error)
    return limit_sample::success;
  if (error_code(r.error) == errc::rate_limited
      || (r.timed_out && !deadline_capped))
    return limit_sample::overload;
  return limit_sample::ignored;
}

} // namespace

void pacing_answered(pool_pacing& p, const call_result& r, bool deadline_capped,
                     uint32_t busy, uint64_t newest, int64_t now,
                     int64_t tokens) {
  bool limited = r.error && error_code(r.error) == errc::rate_limited;
  if (p.pace)
    p.pace->on_answer(r.call_id, hint_of(r), limited,
                      r.retry_after_ms * 1'000'000, now);
  if (p.limit)
    p.limit->on_sample(sample_of(r, deadline_capped), r.call_id, r.upstream_ns,
                       busy, newest, tokens);
}

void pacing_lost(pool_pacing& p, uint64_t call_id, bool stuck,
                 uint64_t newest) {
  if (p.pace)
    p.pace->on_lost(call_id);
  if (p.limit && stuck)
    p.limit->on_sample(limit_sample::overload, call_id, 0, 0, newest);
}

int64_t pacing_admission_ns(pool_pacing& p, std::size_t queued, int64_t tokens,
                            int64_t now) {
  if (!p.pace)
    return 0;
  // An EWMA over 16 calls of the calls' estimated tokens.
  auto t = static_cast<double>(tokens);
  p.tokens_per_call = p.tokens_per_call == 0.0
      ? t
      : p.tokens_per_call + (t - p.tokens_per_call) / 16.0;
  // Erring low: a wrong refusal costs a caller more than a call that waits
  // and finds its deadline passed (a large call once must not make every
  // small one after it look large).
  auto ahead = static_cast<double>(queued) * std::min(p.tokens_per_call, t);
  return p.pace->drain_ns(static_cast<int64_t>(ahead) + tokens, now);
}

int32_t pacing_limit(const pool_pacing& p, uint32_t connections) {
  return static_cast<int32_t>(p.limit ? p.limit->current() : connections);
}

} // namespace embedrt::detail
