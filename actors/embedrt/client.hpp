// A small non-actor facade for code that is not actor-based.
//
//   embedrt::client c{sys, svc};
//   auto fut = c.embed({"text-embedding-3-small", {"hello"}});
//   caf::expected<embedrt::embed_result> r = fut.get();
//
// Each call spawns one short-lived event-based actor that sends one request
// and completes the future or callback from its handler: no thread per call.
// Every call completes exactly once: with the service's answer, or with
// `deadline_exceeded` if the service does not answer within the request's
// timeout plus a grace period (CAF 0.17 has no broken_promise).
#pragma once

#include "embedrt/interfaces.hpp"

#include <caf/actor_system.hpp>
#include <caf/expected.hpp>
#include <chrono>
#include <functional>
#include <future>

namespace embedrt {

class client {
 public:
  using embed_callback = std::function<void(caf::expected<embed_result>)>;

  client(caf::actor_system& sys, service_actor service,
         std::chrono::milliseconds default_timeout
         = std::chrono::milliseconds{30000});

  /// Embeds asynchronously; the future becomes ready exactly once.
  std::future<caf::expected<embed_result>> embed(embed_request req);

  /// Embeds asynchronously; `cb` runs exactly once, on a CAF worker thread
  /// (it must not block).
  void embed(embed_request req, embed_callback cb);

  /// Asks for the service's health (blocks the calling, non-actor thread).
  caf::expected<health_report> health(std::chrono::milliseconds timeout
                                      = std::chrono::milliseconds{5000});

  /// Asks for the service's metrics (blocks the calling, non-actor thread);
  /// `render_prometheus(*snapshot)` gives the Prometheus text.
  caf::expected<metrics_snapshot> metrics(std::chrono::milliseconds timeout
                                          = std::chrono::milliseconds{5000});

  const service_actor& service() const noexcept {
    return service_;
  }

 private:
  caf::actor_system& sys_;
  service_actor service_;
  std::chrono::milliseconds default_timeout_;
};

} // namespace embedrt
