#include "concurrency_limit.hpp"

#include <algorithm>
#include <cmath>

namespace embedrt::detail {

concurrency_limit::concurrency_limit(concurrency_limit_config cfg) : cfg_(cfg) {
  cfg_.max = std::max<uint32_t>(1, cfg_.max);
  cfg_.min = std::clamp<uint32_t>(cfg_.min, 1, cfg_.max);
  limit_ = static_cast<double>(cfg_.max);
}

uint32_t concurrency_limit::current() const noexcept {
  return std::clamp(static_cast<uint32_t>(std::floor(limit_)), cfg_.min,
                    cfg_.max);
}

void concurrency_limit::decrease(double factor, uint64_t newest) {
  limit_ = std::max(static_cast<double>(cfg_.min), limit_ * factor);
  barrier_ = newest;
  decreased_ = true;
}

std::size_t concurrency_limit::class_of(int64_t work) noexcept {
  if (work <= 1)
    return 0;
  // 2 x log2(work), rounded down: a class spans a factor of sqrt(2), within
  // the tolerance.
  auto c = static_cast<std::size_t>(
      std::floor(2.0 * std::log2(static_cast<double>(work))));
  return std::min(c, classes - 1);
}

void concurrency_limit::on_sample(limit_sample kind, uint64_t seq,
                                  int64_t latency_ns, uint32_t in_flight,
                                  uint64_t newest, int64_t work) {
  // Sent before the last decrease: it saw the old limit, and its outcome
  // was (or could have been) the reason of that decrease.
  bool fresh = !decreased_ || seq > barrier_;
  if (kind == limit_sample::overload) {
    if (fresh) {
      decrease(cfg_.backoff, newest);
      ++decreases_overload_;
    }
    return;
  }
  if (kind != limit_sample::success || latency_ns <= 0)
    return;
  auto lat = static_cast<double>(latency_ns);
  auto& base = baseline_[class_of(work)];
  if (base == 0.0) {
    // The first call of its size: nothing to compare it with yet.
    base = lat;
  } else {
    recent_ += (lat / base - recent_) / 8.0;
    base += (lat - base) / (lat < base ? 8.0 : 512.0);
  }
  auto rise = [this, base](double ratio) {
    return ratio > cfg_.tolerance
        && (ratio - 1.0) * base >= static_cast<double>(cfg_.min_rise_ns);
  };
  if (rise(recent_)) {
    if (suspect_ == 0) {
      // Suspected: the calls in flight now may all have been held up by
      // one event (a stall of this process, a pause of the network).
      suspect_ = newest;
    } else if (seq > suspect_) {
      // A call sent after the suspicion: slow too, a lasting rise
      // (congestion); back to normal, a one-off that delayed the calls in
      // flight then, which is forgotten.
      if (rise(lat / base)) {
        if (fresh) {
          decrease(cfg_.latency_backoff, newest);
          ++decreases_latency_;
        }
      } else {
        recent_ = lat / base;
      }
      suspect_ = 0;
    }
    return;
  }
  suspect_ = 0;
  if (2.0 * in_flight >= limit_)
    limit_ = std::min(static_cast<double>(cfg_.max), limit_ + 1.0 / limit_);
}

} // namespace embedrt::detail
