// Per-minute request and token limits of the built-in upstream, as OpenAI
// enforces them: token buckets refilled continuously, reported in the
// x-ratelimit-* headers with Go-style durations.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace embedrt::mock {

/// Formats a duration as Go's `time.Duration.String()` does: "0s", "12ms",
/// "1.5s", "6m0s", "1h0m0s", "3µs", "250ns" (negative values get a '-').
std::string format_go_duration(std::chrono::nanoseconds d);

/// A bucket of `capacity` tokens refilled continuously at capacity/minute.
/// Starts full. Not thread-safe.
class token_bucket {
 public:
  using clock = std::chrono::steady_clock;

  token_bucket(int64_t per_minute, clock::time_point now);

  int64_t capacity() const noexcept {
    return capacity_;
  }

  /// Adds the tokens refilled since the last call (up to the capacity).
  void refill(clock::time_point now) noexcept;

  /// Tokens available (after the last refill).
  double available() const noexcept {
    return available_;
  }

  /// Time until `n` tokens are available (0 if they are; `n` must not exceed
  /// the capacity).
  std::chrono::nanoseconds time_until(double n) const noexcept;

  /// Time until the bucket is full again.
  std::chrono::nanoseconds time_until_full() const noexcept {
    return time_until(static_cast<double>(capacity_));
  }

  void take(double n) noexcept {
    available_ -= n;
  }

 private:
  int64_t capacity_;
  double available_;
  clock::time_point last_;
};

/// The admission decision for one request.
struct rate_decision {
  bool allowed = true;
  /// The request can never pass (more tokens than the per-minute limit).
  bool too_large = false;
  /// When not allowed: time until enough capacity is back.
  std::chrono::nanoseconds retry_after{0};
  /// Which limit refused ("requests" or "tokens").
  const char* limit = "";
};

/// The per-minute limits: requests (rpm) and tokens (tpm); 0 = unlimited.
/// Not thread-safe (the mock guards it with its mutex).
class rate_limiter {
 public:
  using clock = token_bucket::clock;

  rate_limiter(int64_t rpm, int64_t tpm, clock::time_point now);

  bool enabled() const noexcept {
    return rpm_ > 0 || tpm_ > 0;
  }

  /// Admits a request of `tokens` tokens (taking 1 request and `tokens`
  /// tokens from the buckets) or refuses it (taking nothing).
  rate_decision admit(int64_t tokens, clock::time_point now);

  /// Calls `emit(name, value)` for each x-ratelimit-{limit,remaining,reset}-*
  /// header of the enabled limits, reflecting the state after `admit`.
  template <class F>
  void headers(F&& emit) const {
    if (rpm_ > 0)
      emit_for(emit, "requests", requests_);
    if (tpm_ > 0)
      emit_for(emit, "tokens", tokens_);
  }

 private:
  template <class F>
  static void emit_for(F& emit, const char* what, const token_bucket& b) {
    auto remaining = static_cast<int64_t>(b.available());
    if (remaining < 0)
      remaining = 0;
    emit(std::string{"x-ratelimit-limit-"} + what,
         std::to_string(b.capacity()));
    emit(std::string{"x-ratelimit-remaining-"} + what,
         std::to_string(remaining));
    emit(std::string{"x-ratelimit-reset-"} + what,
         format_go_duration(ceil_ms(b.time_until_full())));
  }

  /// Rounds up to whole milliseconds (the headers never show sub-ms units).
  static std::chrono::nanoseconds ceil_ms(std::chrono::nanoseconds d) {
    return std::chrono::ceil<std::chrono::milliseconds>(d);
  }

  int64_t rpm_;
  int64_t tpm_;
  token_bucket requests_;
  token_bucket tokens_;
};

} // namespace embedrt::mock
