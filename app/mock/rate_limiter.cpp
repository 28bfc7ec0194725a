#include "mock/rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace embedrt::mock {

namespace {

constexpr double ns_per_min = 60e9;

/// Appends `v / 10^prec` as Go's fmtFrac does: the fraction digits without
/// trailing zeros, no '.' when the fraction is zero. Returns v / 10^prec.
uint64_t append_frac(std::string& out, uint64_t v, int prec) {
  std::string digits;
  bool print = false;
  for (int i = 0; i < prec; ++i) {
    auto digit = v % 10;
    print = print || digit != 0;
    if (print)
      digits.insert(digits.begin(), static_cast<char>('0' + digit));
    v /= 10;
  }
  if (print)
    out = "." + digits + out;
  return v;
}

} // namespace

std::string format_go_duration(std::chrono::nanoseconds d) {
  auto count = d.count();
  bool neg = count < 0;
  uint64_t u = neg ? uint64_t{0} - static_cast<uint64_t>(count)
                   : static_cast<uint64_t>(count);
  std::string tail; // built back to front, like Go's buffer
  constexpr uint64_t second = 1000000000ull;
  if (u < second) {
    int prec = 0;
    if (u == 0)
      return "0s";
    if (u < 1000ull) {
      tail = "ns";
      prec = 0;
    } else if (u < 1000000ull) {
      tail = "\xC2\xB5s"; // U+00B5 MICRO SIGN, as Go prints it
      prec = 3;
    } else {
      tail = "ms";
      prec = 6;
    }
    u = append_frac(tail, u, prec);
    tail = std::to_string(u) + tail;
  } else {
    tail = "s";
    u = append_frac(tail, u, 9);
    tail = std::to_string(u % 60) + tail;
    u /= 60;
    if (u > 0) {
      tail = std::to_string(u % 60) + "m" + tail;
      u /= 60;
      if (u > 0)
        tail = std::to_string(u) + "h" + tail;
    }
  }
  return neg ? "-" + tail : tail;
}

token_bucket::token_bucket(int64_t per_minute, clock::time_point now)
    : capacity_(per_minute),
      available_(static_cast<double>(per_minute)),
      last_(now) {
  // nop
}

void token_bucket::refill(clock::time_point now) noexcept {
  if (now <= last_)
    return;
  auto elapsed
      = std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_);
  auto refilled = static_cast<double>(elapsed.count())
      * static_cast<double>(capacity_) / ns_per_min;
  available_ = std::min(static_cast<double>(capacity_), available_ + refilled);
  last_ = now;
}

std::chrono::nanoseconds token_bucket::time_until(double n) const noexcept {
  if (available_ >= n || capacity_ <= 0)
    return std::chrono::nanoseconds{0};
  auto ns = std::ceil((n - available_) * ns_per_min
                      / static_cast<double>(capacity_));
  return std::chrono::nanoseconds{static_cast<int64_t>(ns)};
}

rate_limiter::rate_limiter(int64_t rpm, int64_t tpm, clock::time_point now)
    : rpm_(std::max<int64_t>(rpm, 0)),
      tpm_(std::max<int64_t>(tpm, 0)),
      requests_(rpm_, now),
      tokens_(tpm_, now) {
  // nop
}

rate_decision rate_limiter::admit(int64_t tokens, clock::time_point now) {
  rate_decision d;
  auto need = static_cast<double>(tokens);
  if (tpm_ > 0 && tokens > tpm_) {
    d.allowed = false;
    d.too_large = true;
    d.limit = "tokens";
    return d;
  }
  if (rpm_ > 0) {
    requests_.refill(now);
    if (auto wait = requests_.time_until(1.0); wait.count() > 0) {
      d.allowed = false;
      d.retry_after = wait;
      d.limit = "requests";
    }
  }
  if (tpm_ > 0) {
    tokens_.refill(now);
    if (auto wait = tokens_.time_until(need); wait.count() > 0) {
      if (d.allowed || wait > d.retry_after) {
        d.retry_after = wait;
        d.limit = "tokens";
      }
      d.allowed = false;
    }
  }
  if (!d.allowed)
    return d;
  if (rpm_ > 0)
    requests_.take(1.0);
  if (tpm_ > 0)
    tokens_.take(need);
  return d;
}

} // namespace embedrt::mock
