// The clients of `embedrt serve`: each a bearer token with a name (the
// label of its requests in the access log and in /metrics) and optional
// limits in requests and tokens per minute. A request over a limit gets 429
// `rate_limit_exceeded` with Retry-After, as OpenAI answers. Tokens are
// compared in constant time and never logged. No CAF, no Beast.
#pragma once

#include "serve/http_front.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace embedrt::serve {

struct client_spec {
  std::string name;
  /// A secret: never log it.
  std::string token;
  /// Requests and (estimated) tokens per minute; 0 = no limit.
  uint64_t rpm = 0;
  uint64_t tpm = 0;
};

/// A token bucket of `per_minute` units refilled continuously, holding at
/// most one minute's worth (thread-safe through its owner's lock).
struct minute_bucket {
  uint64_t per_minute = 0;
  double level = 0.0;
  std::chrono::steady_clock::time_point last{};

  void refill(std::chrono::steady_clock::time_point now);
  /// How long until `n` units are there (0 if they are).
  std::chrono::milliseconds wait_for(double n) const;
};

class client_registry {
 public:
  using clock = std::chrono::steady_clock;

  explicit client_registry(std::vector<client_spec> specs);

  /// True if clients must present a token.
  bool auth_required() const noexcept {
    return !clients_.empty();
  }

  /// The index of the client whose token `authorization` ("Bearer TOKEN")
  /// carries, or std::nullopt. Compares against every token (constant time
  /// each), whatever matches.
  std::optional<std::size_t> identify(std::string_view authorization) const;

  const std::string& name(std::size_t client) const {
    return clients_[client]->spec.name;
  }

  /// Takes one request and `tokens` from the client's limits; std::nullopt
  /// if within them, else the 429 reply (nothing taken).
  std::optional<front_reply> admit(std::size_t client, uint64_t tokens,
                                   clock::time_point now = clock::now());

  /// Counts a reply for /metrics: the client (std::nullopt: none) and the
  /// status. Lock-free.
  void count(std::optional<std::size_t> client, int status);

  /// Prometheus text of the per-client counters.
  std::string render_metrics() const;

 private:
  /// Replies by status (100 ... 599; others count as 0).
  using status_counts = std::array<std::atomic<uint64_t>, 600>;
  struct state {
    client_spec spec;
    std::mutex mtx;
    minute_bucket requests;
    minute_bucket tokens;
    status_counts replies{};
    std::atomic<uint64_t> limited_requests{0};
    std::atomic<uint64_t> limited_tokens{0};
  };
  std::vector<std::unique_ptr<state>> clients_;
  /// Replies to requests without a (valid) client token.
  status_counts anonymous_{};
};

/// Compares a presented token with the expected one in time that depends
/// only on the presented token's length (never on where they differ).
bool token_matches(std::string_view given, std::string_view expected);

} // namespace embedrt::serve
