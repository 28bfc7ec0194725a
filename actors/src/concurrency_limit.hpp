// Adaptive concurrency of one upstream: how many calls the pool keeps in
// flight, between `min` and `max` (its connections), from the outcomes and
// latencies of its calls (docs/architecture.md, "Pacing and adaptive
// concurrency").
//
// AIMD (TCP's congestion window, Netflix concurrency-limits' AIMDLimit) with
// a latency signal, not a gradient limit (Netflix's Gradient2, Envoy's
// adaptive concurrency filter): those are built for servers with limits in
// the hundreds and grow by a queue allowance (sqrt(limit)) that would keep a
// client's 8 connections from ever dropping; AIMD works in steps that mean
// something at 1..64 and reacts to the signal a client gets, 429s:
// - overload (a 429 rate limit, an attempt timeout): limit x `backoff`;
// - congestion (the recent latency, an EWMA over 8 calls, above `tolerance`
//   x the baseline and by at least `min_rise_ns`, confirmed by a call sent
//   after the rise was first seen that is itself that slow): limit x
//   `latency_backoff`. A stall of this process (or a pause of the network)
//   delays every call in flight at once and lifts the average as much as
//   congestion does, but the calls sent after it are fast again: such a
//   rise is forgotten, not answered with a lower limit;
//   a call is compared with calls of its own size (half-octave classes of
//   its estimated tokens, a baseline each): calls that take longer because
//   batching merged more into them are not congestion. One baseline for all
//   sizes closes a loop against an upstream whose time grows with the batch
//   (a lower limit merges more per call, larger calls take longer, which
//   lowers the limit again, down to `min`); latency per token instead opens
//   the opposite one against an upstream whose time does not (larger calls
//   lower the baseline, smaller ones then read as congestion);
// - at most one decrease per round trip: calls sent before the last
//   decrease saw the old limit, their outcomes do not count again (calls
//   are told apart by their send order, not by time);
// - otherwise, while the limit is used (in flight x 2 >= limit): + 1/limit
//   per successful call, about +1 per round trip.
// A baseline follows lower latencies quickly (1/8) and higher ones slowly
// (1/512): a latency that stays high becomes the new normal after a few
// hundred calls of its size, as Gradient2's long window does.
//
// A plain class: no clock, no timers, no actors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

namespace embedrt::detail {

struct concurrency_limit_config {
  uint32_t min = 1;
  uint32_t max = 8;
  /// Factor on overload (429, timeout) and on congestion (latency).
  double backoff = 0.5;
  double latency_backoff = 0.8;
  /// Recent latency above this factor x the baseline, and by at least
  /// `min_rise_ns`, is congestion (a rise of a fraction of a millisecond is
  /// the machine's scheduling noise, not a congested upstream: at a
  /// loopback upstream's 0.2 ms it halved the limit at random).
  double tolerance = 1.5;
  int64_t min_rise_ns = 2'000'000;
};

/// How a finished call counts.
enum class limit_sample : uint8_t {
  success,  ///< Answered by the upstream (latency counts).
  overload, ///< 429 rate limit or an attempt timeout.
  ignored,  ///< Anything else (caller errors, cut by the caller's deadline).
};

class concurrency_limit {
 public:
  explicit concurrency_limit(concurrency_limit_config cfg);

  /// Calls that may be in flight now (min..max).
  uint32_t current() const noexcept;

  /// Call `seq` finished after `latency_ns` on the wire carrying `work`
  /// (its estimated tokens); `in_flight` calls were in flight when it did
  /// (itself included), and `newest` is the highest seq sent so far (calls
  /// are numbered in the order they are sent).
  void on_sample(limit_sample kind, uint64_t seq, int64_t latency_ns,
                 uint32_t in_flight, uint64_t newest, int64_t work = 1);

  /// Decreases so far, after overload (429, attempt timeout) and after
  /// congestion (latency).
  int64_t decreases_overload() const noexcept {
    return decreases_overload_;
  }
  int64_t decreases_latency() const noexcept {
    return decreases_latency_;
  }

  /// The baseline latency of calls carrying `work` (0: none seen yet).
  int64_t baseline_ns(int64_t work = 1) const noexcept {
    return static_cast<int64_t>(baseline_[class_of(work)]);
  }

 private:
  void decrease(double factor, uint64_t newest);

  concurrency_limit_config cfg_;
  /// Size classes: half octaves of the work (tokens), up to 2^31.
  static constexpr std::size_t classes = 64;
  static std::size_t class_of(int64_t work) noexcept;

  double limit_;
  /// Baseline latency (ns) of each size class (0: not seen yet).
  double baseline_[classes] = {};
  /// Recent latency over the baseline of each call's class (an EWMA; 1 =
  /// as usual).
  double recent_ = 1.0;
  /// The newest call sent at the last decrease: calls up to it saw the
  /// limit before that decrease.
  uint64_t barrier_ = 0;
  bool decreased_ = false;
  /// The newest call sent when the recent latency first rose above the
  /// tolerance (0: no rise suspected): only a call sent after it can
  /// confirm the rise.
  uint64_t suspect_ = 0;
  int64_t decreases_overload_ = 0;
  int64_t decreases_latency_ = 0;
};

} // namespace embedrt::detail
