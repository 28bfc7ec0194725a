// Pure policy objects used by the actors. They hold no actor state and do no
// I/O, so the rules are unit-testable on their own; the actors own one
// instance each and feed them virtual or real time.
#pragma once

#include "embedrt/config.hpp"

#include <caf/timespan.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <random>

namespace embedrt {

/// Full-jitter exponential backoff (AWS architecture blog, "Exponential
/// Backoff and Jitter"): the n-th retry (n >= 1) waits uniform(0, min(cap,
/// base * 2^(n-1))). An upstream hint (retry-after) replaces the jittered
/// delay when present.
class backoff_policy {
 public:
  backoff_policy(milliseconds base, milliseconds cap, uint64_t seed);

  /// Delay before retry number `retry` (1 = first retry).
  caf::timespan next_delay(uint32_t retry, milliseconds retry_after_hint);

  /// Upper bound of the jittered delay for retry number `retry`.
  caf::timespan ceiling(uint32_t retry) const;

 private:
  milliseconds base_;
  milliseconds cap_;
  /// splitmix64 state: 8 bytes per request actor instead of a 2.5 KB
  /// Mersenne twister (10,000 concurrent requests carry one each).
  uint64_t rng_;
};

/// Retry budget of one pool: admits a retry only while retries in flight
/// stay within `ratio * calls_in_flight + min_retries` (Envoy's
/// retry_budget, Finagle's RetryBudget). Counters live in the pool actor.
class retry_budget {
 public:
  retry_budget(double ratio, uint32_t min_retries);

  /// Called when a call is admitted; returns false if it is a retry that the
  /// budget rejects (nothing is counted then).
  bool try_admit(bool is_retry);

  /// Called exactly once for every admitted call when it leaves the pool.
  void release(bool is_retry);

  uint32_t in_flight() const noexcept {
    return in_flight_;
  }
  uint32_t retries_in_flight() const noexcept {
    return retries_;
  }

 private:
  double ratio_;
  uint32_t min_retries_;
  uint32_t in_flight_ = 0;
  uint32_t retries_ = 0;
};

/// Restart intensity of a supervisor (Erlang/OTP's MaxR in MaxT): records
/// restart times and says when more than `max_restarts` happened within
/// `within`.
class restart_intensity {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  restart_intensity(uint32_t max_restarts, milliseconds within);

  /// Records a restart at `now`; returns false if the intensity is exceeded
  /// (the caller then gives up on restarting).
  bool record(time_point now);

  /// Forgets all recorded restarts (after a successful recovery).
  void reset();

  std::size_t recent() const noexcept {
    return restarts_.size();
  }

 private:
  uint32_t max_restarts_;
  milliseconds within_;
  std::deque<time_point> restarts_;
};

/// Doubling backoff with a cap, e.g. for restarts and down-probes.
inline milliseconds doubling_backoff(milliseconds base, milliseconds cap,
                                     uint32_t step) {
  auto d = base;
  for (uint32_t i = 0; i < step && d < cap; ++i)
    d *= 2;
  return d < cap ? d : cap;
}

} // namespace embedrt
