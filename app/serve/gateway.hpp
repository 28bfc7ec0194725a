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
//                                         plus the per-client counters
//   OPTIONS (any path, CORS on)        -> the preflight (cors.hpp)
//
// With clients (clients.hpp) every path but the probes needs a client's
// token; a client's RPM/TPM limits are applied before the request is sent.
// Each embeddings request takes a lease on the node's budget of response
// bytes in flight (response_budget.hpp) until its reply is written; over the
// budget it is refused at once with 429 `overloaded`.
// Each request is logged once at info when answered (method, path, status,
// duration, client, request id; never a token or a body).
//
// Everything runs on the I/O thread that read the request up to the send;
// an embeddings request goes to the gateway's one long-lived actor (one
// mailbox enqueue, no actor spawned per request), which asks the service
// without a CAF timeout (no clock entry per request: the service answers
// every request by its deadline) and hands the answer, on a CAF worker, to
// the responder (a post back to the connection's strand). Nothing blocks.
#pragma once

#include "embedrt/interfaces.hpp"
#include "serve/clients.hpp"
#include "serve/cors.hpp"
#include "serve/http_front.hpp"
#include "serve/replies.hpp"
#include "serve/response_budget.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace embedrt::serve {

struct gateway_options {
  /// The clients and their tokens; empty: no authentication.
  std::vector<client_spec> clients;
  /// Allowed browser origins ("*": any); empty: CORS off.
  std::vector<std::string> cors_origins;
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
  /// The budget of response bytes in flight (response_budget.hpp); 0: no
  /// limit.
  uint64_t response_budget_bytes = response_budget::default_limit;
  /// The node's budget, shared with the other gateways of the node (those
  /// of older configurations draining after a reload); its limit is set to
  /// `response_budget_bytes`. Null: the gateway has a budget of its own.
  std::shared_ptr<response_budget> budget;
  /// The dimensions a request that names none is admitted on (OpenAI's
  /// largest); its lease is set to the true size when the answer comes.
  uint64_t assumed_dimensions = 3072;
};

class gateway {
 public:
  gateway(caf::actor_system& sys, service_actor svc, gateway_options opts);

  /// The request handler of the front end.
  void handle(front_request req, responder respond);

 private:
  void embeddings(front_request& req, responder& respond,
                  std::optional<std::size_t> who);
  void models(responder& respond);
  void readiness(responder& respond);
  void metrics(responder& respond);

  caf::actor_system& sys_;
  service_actor service_;
  /// Sends the embeddings requests to the service and runs their callbacks
  /// (gateway.cpp); it goes by itself once the gateway and the last request
  /// in flight let go of it.
  caf::actor caller_;
  gateway_options opts_;
  /// Shared with the reply callbacks, which may run after the gateway is
  /// gone (a request the runtime answers during shutdown).
  std::shared_ptr<client_registry> clients_;
  std::shared_ptr<const cors_policy> cors_;
  /// Shared with the replies, which hold their lease until written.
  std::shared_ptr<response_budget> budget_;
  /// `created` of the listed models: when the gateway started (Unix time).
  int64_t started_ = 0;
};

} // namespace embedrt::serve
