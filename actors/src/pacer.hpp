// Rate-limit pacing of one upstream: request and token buckets that the pool
// (the dispatcher) asks before it sends a batch, so that the upstream's
// per-minute limits are approached instead of discovered through 429s
// (docs/architecture.md, "Pacing and adaptive concurrency").
//
// Each limit is a bucket refilled continuously at capacity per minute, as
// OpenAI enforces it and as OpenAI's cookbook script for parallel requests
// (api_request_parallel_processor.py) paces. Unlike that script, the buckets
// follow what the upstream says: a response's x-ratelimit-limit-* sets the
// capacity and its x-ratelimit-remaining-* resets what is available, less
// what was sent after that call and is still in flight; responses are read
// in the order their calls were sent (an older one is stale). Configured
// rpm/tpm give the buckets before (or without) such headers. Other clients of
// the same key show only in the remaining counts: what the upstream counted
// beyond this pacer's own calls over the last few seconds is their rate, and
// the buckets refill at the capacity less that rate. Without a limit
// (a provider that sends only remaining and reset), nothing goes once the
// upstream says none remains, until its x-ratelimit-reset-*. A 429 holds
// every send for its retry-after.
//
// A plain class in virtual time: every call takes `now` (ns on any
// monotonic clock); no timers, no actors.
#pragma once

#include <cstdint>
#include <deque>
#include <utility>

namespace embedrt::detail {

/// The x-ratelimit-* values of one response; -1 = absent.
struct rate_hint {
  int64_t limit_requests = -1;
  int64_t limit_tokens = -1;
  int64_t remaining_requests = -1;
  int64_t remaining_tokens = -1;
  int64_t reset_requests_ns = -1;
  int64_t reset_tokens_ns = -1;
};

/// A bucket of `capacity` units refilled continuously at capacity per
/// minute, less what other clients of the same limit take (`others`);
/// unknown (capacity 0) until configured. Its level may go below 0 when the
/// upstream reports less than was thought sent.
class pace_bucket {
 public:
  static constexpr int64_t ns_per_minute = 60'000'000'000;
  /// Others' use is measured over the reports of the last `others_window`
  /// (ns), at least `others_min_span` apart.
  static constexpr int64_t others_window = 5'000'000'000;
  static constexpr int64_t others_min_span = 1'000'000'000;

  bool known() const noexcept {
    return capacity_ > 0;
  }

  double capacity() const noexcept {
    return capacity_;
  }

  /// Sets the capacity (per minute); a new bucket starts full, a known one
  /// keeps its level (capped at the new capacity).
  void set_capacity(double capacity, int64_t now) noexcept;

  /// Adds what refilled since the last call, up to the capacity.
  void refill(int64_t now) noexcept;

  double level() const noexcept {
    return level_;
  }

  void set_level(double level) noexcept;

  /// The upstream reports `remaining` units (less what this pacer sent
  /// after the answered call, which it had not counted yet) when this pacer
  /// has sent `own` units since the start: sets the level, and measures
  /// others' use since the report `others_window` ago (what the upstream
  /// took beyond this pacer's units, refill counted). Only while the bucket
  /// stays below half its capacity: a fuller one may have been full, when
  /// the refill is lost and the use it hides is unknown.
  void follow(double remaining, double own, int64_t now);

  /// Units per minute other clients take (0 when none were seen).
  double others() const noexcept {
    return others_;
  }

  /// Units per minute this pacer gets: the capacity less others' use.
  double rate() const noexcept {
    return capacity_ - others_;
  }

  /// What others take in a second: left in the bucket beyond a call, since
  /// their use comes in bursts (their calls) that the rate only averages.
  double reserve() const noexcept {
    return others_ / 60.0;
  }

  void take(double n) noexcept {
    level_ -= n;
  }

  /// Time from the last refill until `n` units and the reserve (at most the
  /// capacity) are there; 0 when they are or the bucket is unknown.
  int64_t wait_ns(double n) const noexcept;

 private:
  struct report {
    int64_t at;
    double remaining;
    double own;
  };

  double capacity_ = 0.0;
  double level_ = 0.0;
  int64_t last_ = 0;
  double others_ = 0.0;
  /// The reports of the last `others_window`, oldest first, at least a
  /// fiftieth of it apart.
  std::deque<report> reports_;
};

struct pacer_config {
  /// Learn the limits from the responses' x-ratelimit-* headers.
  bool from_headers = true;
  /// Requests and tokens per minute to pace to before (or without) such
  /// headers; 0 = none.
  int64_t rpm = 0;
  int64_t tpm = 0;
};

class pacer {
 public:
  pacer(pacer_config cfg, int64_t now);

  /// Whether any limit is known (configured or learned): else every call may
  /// go at once.
  bool active() const noexcept {
    return requests_.known() || tokens_.known() || hold_until_ != 0;
  }

  /// Time from `now` until a call of `tokens` may be sent (0: now). A call
  /// larger than the token capacity waits for a full bucket (the upstream
  /// then decides).
  int64_t wait_ns(int64_t tokens, int64_t now) noexcept;

  /// Time from `now` until `tokens` in all (the queue ahead and a new call)
  /// will have been sent at the token rate (0 while no token limit is
  /// known): the admission estimate's pacing part.
  int64_t drain_ns(int64_t tokens, int64_t now) noexcept;

  /// Tokens that may be sent now without waiting (a batch's cap); a large
  /// number while no token limit is known.
  int64_t tokens_available(int64_t now) noexcept;

  /// Call `seq` (increasing with each send) of `tokens` was sent.
  void on_send(uint64_t seq, int64_t tokens, int64_t now);

  /// Call `seq` was answered with `hint`; a 429 (`rate_limited`) holds all
  /// sends for `retry_after_ns` (when > 0).
  void on_answer(uint64_t seq, const rate_hint& hint, bool rate_limited,
                 int64_t retry_after_ns, int64_t now);

  /// Call `seq` ended without an answer (its connection died).
  void on_lost(uint64_t seq);

  /// A call of `tokens` that the upstream counted but that was not sent by
  /// the pool (the health check's): taken from the buckets like a send,
  /// with nothing in flight to answer.
  void charge(int64_t tokens, int64_t now);

  const pace_bucket& requests() const noexcept {
    return requests_;
  }

  const pace_bucket& tokens() const noexcept {
    return tokens_;
  }

 private:
  struct sent {
    uint64_t seq;
    int64_t tokens;
  };

  /// Removes `seq` from the calls in flight (its tokens to `tokens` if not
  /// null); false if it was not there.
  bool forget(uint64_t seq, int64_t* tokens = nullptr);
  void apply(const rate_hint& hint, uint64_t seq, int64_t now);

  pacer_config cfg_;
  pace_bucket requests_;
  pace_bucket tokens_;
  /// Calls in flight, in send order.
  std::deque<sent> in_flight_;
  /// Requests and tokens sent since the start.
  int64_t requests_sent_ = 0;
  int64_t tokens_sent_ = 0;
  /// The newest call whose headers were applied (older ones are stale).
  uint64_t applied_seq_ = 0;
  /// After a 429: nothing goes before this time (0: no hold).
  int64_t hold_until_ = 0;
};

} // namespace embedrt::detail
