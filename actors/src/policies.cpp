#include "embedrt/policies.hpp"

#include <algorithm>

namespace embedrt {

backoff_policy::backoff_policy(milliseconds base, milliseconds cap,
                               uint64_t seed)
    : base_(base), cap_(cap), rng_(seed) {
  // nop
}

caf::timespan backoff_policy::ceiling(uint32_t retry) const {
  auto top = doubling_backoff(base_, cap_, retry > 0 ? retry - 1 : 0);
  return std::chrono::duration_cast<caf::timespan>(top);
}

caf::timespan backoff_policy::next_delay(uint32_t retry,
                                         milliseconds retry_after_hint) {
  if (retry_after_hint.count() > 0)
    return std::chrono::duration_cast<caf::timespan>(retry_after_hint);
  auto top = ceiling(retry).count();
  if (top <= 0)
    return caf::timespan{0};
  // splitmix64 (Steele, Lea, Flood 2014); the modulo bias is below 2^-30
  // for any delay under a day.
  uint64_t z = (rng_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return caf::timespan{
      static_cast<int64_t>(z % (static_cast<uint64_t>(top) + 1))};
}

retry_budget::retry_budget(double ratio, uint32_t min_retries)
    : ratio_(ratio), min_retries_(min_retries) {
  // nop
}

bool retry_budget::try_admit(bool is_retry) {
  if (is_retry) {
    auto allowed = static_cast<double>(min_retries_)
        + ratio_ * static_cast<double>(in_flight_);
    if (static_cast<double>(retries_ + 1) > allowed)
      return false;
    ++retries_;
  }
  ++in_flight_;
  return true;
}

void retry_budget::release(bool is_retry) {
  if (in_flight_ > 0)
    --in_flight_;
  if (is_retry && retries_ > 0)
    --retries_;
}

restart_intensity::restart_intensity(uint32_t max_restarts, milliseconds within)
    : max_restarts_(max_restarts), within_(within) {
  // nop
}

bool restart_intensity::record(time_point now) {
  while (!restarts_.empty() && now - restarts_.front() > within_)
    restarts_.pop_front();
  restarts_.push_back(now);
  return restarts_.size() <= max_restarts_;
}

void restart_intensity::reset() {
  restarts_.clear();
}

} // namespace embedrt
