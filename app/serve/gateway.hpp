// The gateway of `embedrt serve`: turns each HTTP request from the front end
// (http_front.hpp) into a typed message to the runtime's `service` actor and
// the answer back into an HTTP reply (replies.hpp).
//
//   POST /v1/embeddings, /embeddings  -> (embed_atom, embed_request)
//   GET  /v1/models, /models           -> (status_atom): the configured
//                                         models plus those the runtime
//                                         (a front: its peers) serves
//   GET  /healthz                      -> 200 while the process runs
//   GET  /readyz                       -> (health_atom): 200 iff ready
//   GET  /metrics                      -> (metrics_atom): Prometheus text
//
// Everything runs on the I/O thread that read the request up to the send;
// the answer arrives on a CAF worker, which hands it to the responder (a post
// back to the connection's strand). Nothing blocks.
#pragma once

#include "embedrt/client.hpp"
#include "embedrt/interfaces.hpp"
#include "serve/http_front.hpp"
#include "serve/replies.hpp"

#include <caf/actor_system.hpp>
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace embedrt::serve {

struct gateway_options {
  /// Client bearer token; empty: no authentication.
  std::string auth_token;
  /// Deadline of a request without the timeout header.
  std::chrono::milliseconds default_timeout{30000};
  /// Largest deadline the timeout header may ask for.
  std::chrono::milliseconds max_timeout{3'600'000};
  /// Timeout of a health request to the service (readiness probe).
  std::chrono::milliseconds health_timeout{2000};
  /// The model names `GET /v1/models` lists (app::served_models).
  std::vector<std::string> models;
  /// How much of an error's detail reaches the client (replies.hpp).
  upstream_detail upstream_errors = upstream_detail::message;
};

class gateway {
 public:
  gateway(caf::actor_system& sys, service_actor svc, gateway_options opts);

  /// The request handler of the front end.
  void handle(front_request req, responder respond);

 private:
  void embeddings(front_request& req, responder& respond);
  void models(responder& respond);
  void readiness(responder& respond);
  void metrics(responder& respond);
  bool authorized(const front_request& req) const;

  caf::actor_system& sys_;
  service_actor service_;
  client client_;
  gateway_options opts_;
  /// `created` of the listed models: when the gateway started (Unix time).
  int64_t started_ = 0;
};

/// Compares a presented token with the expected one in time that depends
/// only on the presented token's length (never on where they differ).
bool token_matches(std::string_view given, std::string_view expected);

} // namespace embedrt::serve
