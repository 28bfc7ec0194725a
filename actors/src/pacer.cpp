#include "pacer.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace embedrt::detail {

void pace_bucket::set_capacity(double capacity, int64_t now) noexcept {
  if (capacity <= 0.0)
    return;
  if (!known()) {
    level_ = capacity;
    last_ = now;
  } else {
    refill(now);
    level_ = std::min(level_, capacity);
  }
  capacity_ = capacity;
  others_ = std::min(others_, 0.9 * capacity);
}

void pace_bucket::refill(int64_t now) noexcept {
  if (!known() || now <= last_)
    return;
  auto refilled = static_cast<double>(now - last_) * rate()
      / static_cast<double>(ns_per_minute);
  level_ = std::min(capacity_, level_ + refilled);
  last_ = now;
}

void pace_bucket::set_level(double level) noexcept {
  level_ = std::min(level, capacity_);
}

void pace_bucket::follow(double remaining, double own, int64_t now) {
  refill(now);
  set_level(remaining);
  if (remaining > capacity_ / 2) {
    // Perhaps full since an earlier report: start measuring afresh.
    reports_.clear();
    return;
  }
  while (reports_.size() > 1 && now - reports_[1].at >= others_window)
    reports_.pop_front();
  if (!reports_.empty() && now - reports_.front().at >= others_min_span) {
    const auto& from = reports_.front();
    auto span = static_cast<double>(now - from.at);
    // The upstream went from `from.remaining` to `remaining`, refilled at
    // the capacity, and counted `own - from.own` of this pacer's units; the
    // rest of what it took went to others.
    auto taken = from.remaining - remaining
        + span * capacity_ / static_cast<double>(ns_per_minute)
        - (own - from.own);
    others_ = std::clamp(taken * static_cast<double>(ns_per_minute) / span, 0.0,
                         0.9 * capacity_);
  }
  // One report kept per 100 ms at most: a bounded window however often
  // the answers come.
  if (reports_.empty() || now - reports_.back().at >= others_window / 50)
    reports_.push_back(report{now, remaining, own});
}

int64_t pace_bucket::wait_ns(double n) const noexcept {
  if (!known())
    return 0;
  n = std::min(n + reserve(), capacity_);
  if (level_ >= n)
    return 0;
  return static_cast<int64_t>(
      std::ceil((n - level_) * static_cast<double>(ns_per_minute) / rate()));
}

pacer::pacer(pacer_config cfg, int64_t now) : cfg_(cfg) {
  if (cfg_.rpm > 0)
    requests_.set_capacity(static_cast<double>(cfg_.rpm), now);
  if (cfg_.tpm > 0)
    tokens_.set_capacity(static_cast<double>(cfg_.tpm), now);
}

int64_t pacer::wait_ns(int64_t tokens, int64_t now) noexcept {
  int64_t wait = hold_until_ > now ? hold_until_ - now : 0;
  requests_.refill(now);
  tokens_.refill(now);
  wait = std::max(wait, requests_.wait_ns(1.0));
  wait = std::max(wait, tokens_.wait_ns(static_cast<double>(tokens)));
  return wait;
}

int64_t pacer::drain_ns(int64_t tokens, int64_t now) noexcept {
  int64_t hold = hold_until_ > now ? hold_until_ - now : 0;
  if (!tokens_.known())
    return hold;
  tokens_.refill(now);
  auto short_by
      = static_cast<double>(tokens) + tokens_.reserve() - tokens_.level();
  if (short_by <= 0.0)
    return hold;
  auto ns = short_by * static_cast<double>(pace_bucket::ns_per_minute)
      / tokens_.rate();
  return std::max(hold, static_cast<int64_t>(std::ceil(ns)));
}

int64_t pacer::tokens_available(int64_t now) noexcept {
  if (!tokens_.known())
    return std::numeric_limits<int64_t>::max();
  tokens_.refill(now);
  return static_cast<int64_t>(
      std::max(0.0, std::floor(tokens_.level() - tokens_.reserve())));
}

void pacer::on_send(uint64_t seq, int64_t tokens, int64_t now) {
  charge(tokens, now);
  in_flight_.push_back(sent{seq, tokens});
}

void pacer::charge(int64_t tokens, int64_t now) {
  requests_.refill(now);
  tokens_.refill(now);
  requests_.take(1.0);
  tokens_.take(static_cast<double>(tokens));
  // Counted by the upstream (a charged call like one sent before the next).
  ++requests_sent_;
  tokens_sent_ += tokens;
}

bool pacer::forget(uint64_t seq, int64_t* tokens) {
  auto i = std::find_if(in_flight_.begin(), in_flight_.end(),
                        [seq](const sent& s) {
                          return s.seq == seq;
                        });
  if (i == in_flight_.end())
    return false;
  if (tokens != nullptr)
    *tokens = i->tokens;
  in_flight_.erase(i);
  return true;
}

void pacer::on_lost(uint64_t seq) {
  forget(seq);
}

void pacer::on_answer(uint64_t seq, const rate_hint& hint, bool rate_limited,
                      int64_t retry_after_ns, int64_t now) {
  int64_t tokens = 0;
  if (!forget(seq, &tokens))
    return;
  if (rate_limited) {
    // Refused: the upstream did not count it (and its retry is a send of
    // its own).
    --requests_sent_;
    tokens_sent_ -= tokens;
    if (retry_after_ns > 0)
      hold_until_ = std::max(hold_until_, now + retry_after_ns);
  }
  if (cfg_.from_headers && seq > applied_seq_)
    apply(hint, seq, now);
}

void pacer::apply(const rate_hint& hint, uint64_t seq, int64_t now) {
  bool any = false;
  // What was sent after this call and is still in flight: the upstream's
  // remaining did not count it yet (if it did, pacing errs on the safe side).
  int64_t later_requests = 0;
  int64_t later_tokens = 0;
  for (const auto& s : in_flight_)
    if (s.seq > seq) {
      ++later_requests;
      later_tokens += s.tokens;
    }
  auto follow = [&](pace_bucket& b, int64_t limit, int64_t remaining,
                    int64_t reset_ns, int64_t later, int64_t own) {
    if (limit > 0)
      b.set_capacity(static_cast<double>(limit), now);
    if (remaining < 0)
      return;
    if (!b.known()) {
      // No capacity to refill at (no limit header, nothing configured):
      // nothing more goes once the upstream says none is left, until its
      // reset.
      if (remaining - later <= 0 && reset_ns > 0)
        hold_until_ = std::max(hold_until_, now + reset_ns);
      any = true;
      return;
    }
    // What is left once the later calls count too, against all this
    // pacer sent.
    b.follow(static_cast<double>(remaining - later), static_cast<double>(own),
             now);
    any = true;
  };
  follow(requests_, hint.limit_requests, hint.remaining_requests,
         hint.reset_requests_ns, later_requests, requests_sent_);
  follow(tokens_, hint.limit_tokens, hint.remaining_tokens,
         hint.reset_tokens_ns, later_tokens, tokens_sent_);
  if (any)
    applied_seq_ = seq;
}

} // namespace embedrt::detail
