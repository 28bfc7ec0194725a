#include "serve/response_budget.hpp"

#include "embedrt/log.hpp"

#include <chrono>
#include <malloc.h>
#include <string>
#include <utility>

namespace embedrt::serve {

response_budget::lease::lease(std::shared_ptr<response_budget> owner,
                              uint64_t bytes)
    : owner_(std::move(owner)), bytes_(bytes) {
  // nop
}

response_budget::lease::lease(lease&& other) noexcept
    : owner_(std::move(other.owner_)), bytes_(std::exchange(other.bytes_, 0)) {
  // nop
}

response_budget::lease&
response_budget::lease::operator=(lease&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::move(other.owner_);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

response_budget::lease::~lease() {
  release();
}

void response_budget::lease::resize(uint64_t bytes) {
  if (!owner_)
    return;
  if (bytes > bytes_)
    owner_->held_.fetch_add(bytes - bytes_, std::memory_order_relaxed);
  else if (bytes < bytes_)
    owner_->give_back(bytes_ - bytes);
  bytes_ = bytes;
}

void response_budget::lease::release() {
  if (owner_)
    owner_->give_back(std::exchange(bytes_, 0));
  owner_.reset();
}

response_budget::response_budget(uint64_t limit, uint64_t trim_after)
    : limit_(limit), trim_after_(trim_after) {
  // nop
}

std::optional<response_budget::lease> response_budget::acquire(uint64_t bytes) {
  auto held = held_.load(std::memory_order_relaxed);
  auto limit = limit_.load(std::memory_order_relaxed);
  for (;;) {
    // A request alone always goes (else a large one could never).
    if (limit != 0 && held != 0 && (bytes > limit || held > limit - bytes)) {
      refusals_.fetch_add(1, std::memory_order_relaxed);
      return std::nullopt;
    }
    if (held_.compare_exchange_weak(held, held + bytes,
                                    std::memory_order_relaxed))
      return lease{shared_from_this(), bytes};
  }
}

void response_budget::give_back(uint64_t bytes) {
  if (bytes == 0)
    return;
  auto released
      = released_since_trim_.fetch_add(bytes, std::memory_order_relaxed)
      + bytes;
  auto left = held_.fetch_sub(bytes, std::memory_order_relaxed) - bytes;
  // Idle after a burst of large requests: hand the freed pages back (glibc
  // keeps them in its arenas otherwise). Whoever takes the count trims.
  if (left != 0 || trim_after_ == 0 || released < trim_after_)
    return;
  auto taken = released_since_trim_.exchange(0, std::memory_order_relaxed);
  if (taken < trim_after_) {
    released_since_trim_.fetch_add(taken, std::memory_order_relaxed);
    return;
  }
  auto start = std::chrono::steady_clock::now();
  malloc_trim(0);
  trims_.fetch_add(1, std::memory_order_relaxed);
  if (log_enabled(log_level::debug)) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    log(log_level::debug, "heap_trim",
        {{"released_bytes", std::to_string(taken)},
         {"us", std::to_string(us)}});
  }
}

std::string response_budget::render_metrics() const {
  std::string out;
  out += "# HELP embedrt_gateway_response_bytes_held Estimated memory held by "
         "the embeddings responses in flight (admission to last byte "
         "written).\n"
         "# TYPE embedrt_gateway_response_bytes_held gauge\n"
         "embedrt_gateway_response_bytes_held "
      + std::to_string(held()) + "\n";
  out += "# HELP embedrt_gateway_response_budget_bytes The budget of response "
         "bytes in flight (response_budget_bytes; 0: none).\n"
         "# TYPE embedrt_gateway_response_budget_bytes gauge\n"
         "embedrt_gateway_response_budget_bytes "
      + std::to_string(limit()) + "\n";
  out += "# HELP embedrt_gateway_budget_refusals_total Requests refused with "
         "429 overloaded because their response would exceed the budget.\n"
         "# TYPE embedrt_gateway_budget_refusals_total counter\n"
         "embedrt_gateway_budget_refusals_total "
      + std::to_string(refusals()) + "\n";
  return out;
}

uint64_t response_estimate(uint64_t inputs, uint64_t dimensions, bool base64) {
  auto values = inputs * dimensions;
  auto text = base64 ? (values * 4 + 2) / 3 * 4 : values * 12;
  return values * 4 + text + inputs * 64;
}

} // namespace embedrt::serve
