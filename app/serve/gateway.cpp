#include "serve/gateway.hpp"

#include "embedrt/log.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/json_writer.hpp"
#include "embedrt/protocol/metrics.hpp"
#include "embedrt/protocol/openai.hpp"
#include "embedrt/protocol/provider.hpp"
#include "serve/replies.hpp"

#include <algorithm>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>
#include <cctype>
#include <charconv>
#include <functional>
#include <optional>
#include <utility>

namespace embedrt::serve {

namespace {

/// One embeddings request for the gateway's actor, and what to call with
/// the service's answer (exactly once, on a CAF worker).
struct embed_call {
  embed_request req;
  std::function<void(caf::expected<embed_result>)> done;
};

} // namespace

} // namespace embedrt::serve

// Travels only between the I/O thread and the gateway's actor, in-process.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<embedrt::serve::embed_call>)

namespace embedrt::serve {

namespace {

/// The gateway's actor: asks the service for each call, with no CAF
/// timeout (the service answers every request by its deadline, and a
/// request to a service that is gone fails at once), and runs the call's
/// callback with the answer.
caf::behavior caller_actor(caf::event_based_actor* self, service_actor svc) {
  return {
      [self, svc](std::shared_ptr<embed_call>& call) {
        self->request(svc, caf::infinite, embed_atom_v, std::move(call->req))
            .then(
                [call](embed_result& r) {
                  call->done(std::move(r));
                },
                [call](caf::error& err) {
                  call->done(std::move(err));
                });
      },
  };
}

std::string_view path_of(std::string_view target) {
  auto q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

front_reply method_not_allowed(const front_request& req, const char* allow) {
  auto r = error_reply(405,
                       "Method " + req.method + " is not allowed on "
                           + std::string{path_of(req.target)} + " (use " + allow
                           + ")",
                       "invalid_request_error", "method_not_allowed");
  r.headers.emplace_back("allow", allow);
  return r;
}

/// One request to the service from a short-lived actor (the facade's
/// `health` and `metrics` block; this does not). `cb` runs exactly once, on a
/// CAF worker.
template <class Result, class Atom>
void ask_service(caf::actor_system& sys, const service_actor& svc,
                 caf::timespan timeout, Atom atom,
                 std::function<void(caf::expected<Result>)> cb) {
  sys.spawn(
      [](caf::event_based_actor* self, service_actor svc, caf::timespan timeout,
         Atom atom, std::function<void(caf::expected<Result>)> cb) {
        self->request(svc, timeout, atom)
            .then(
                [self, cb](Result& x) {
                  cb(std::move(x));
                  self->quit();
                },
                [self, cb](caf::error& err) {
                  cb(std::move(err));
                  self->quit();
                });
      },
      svc, timeout, atom, std::move(cb));
}

front_reply unauthorized(const front_request& req) {
  auto r = error_reply(401,
                       req.authorization.empty()
                           ? "Missing bearer token (Authorization: Bearer "
                             "TOKEN)"
                           : "Incorrect bearer token",
                       "invalid_request_error", "invalid_api_key");
  r.headers.emplace_back("www-authenticate", "Bearer");
  return r;
}

/// `{"ready":B,"upstreams":[{"name":..,"state":..},..]}`.
std::string readiness_body(const health_report& h) {
  auto quote = [](const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\')
        out += '\\';
      if (static_cast<unsigned char>(c) >= 0x20)
        out += c;
    }
    return out + "\"";
  };
  std::string body = h.ready ? "{\"ready\":true" : "{\"ready\":false";
  body += ",\"upstreams\":[";
  for (std::size_t i = 0; i < h.upstreams.size(); ++i) {
    const auto& u = h.upstreams[i];
    body += (i == 0 ? "" : ",");
    body += "{\"name\":" + quote(u.name) + ",\"state\":" + quote(u.state)
        + ",\"connections\":" + std::to_string(u.connections)
        + ",\"queued\":" + std::to_string(u.queued_requests) + "}";
  }
  return body + "]}";
}

/// The deadline of `req` from its timeout header into `timeout` (left
/// alone without the header), or the 400 for a bad one.
std::optional<front_reply> read_timeout(const front_request& req,
                                        std::chrono::milliseconds max,
                                        std::chrono::milliseconds& timeout) {
  if (!req.has_timeout_ms)
    return std::nullopt;
  int64_t ms = 0;
  const auto& text = req.timeout_ms;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()
      || ms < 1 || ms > max.count())
    return error_reply(400,
                       std::string{"Header "} + timeout_header
                           + " must be an integer number of milliseconds in "
                             "[1, "
                           + std::to_string(max.count()) + "]",
                       "invalid_request_error", "invalid_input",
                       timeout_header);
  timeout = std::chrono::milliseconds{ms};
  return std::nullopt;
}

/// The 429 for a request whose response would exceed the node's budget.
caf::error over_budget(const response_budget& budget, uint64_t inputs,
                       uint64_t dims, bool base64) {
  auto mib = [](uint64_t bytes) {
    return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB";
  };
  return make_error(
      errc::overloaded,
      "the server is busy: the responses in flight hold " + mib(budget.held())
          + " of its " + mib(budget.limit()) + " budget and this one ("
          + std::to_string(inputs) + " inputs x " + std::to_string(dims)
          + " dimensions, about " + mib(response_estimate(inputs, dims, base64))
          + ") does not fit; retry later",
      429, std::chrono::milliseconds{1000});
}

} // namespace

gateway::gateway(caf::actor_system& sys, service_actor svc,
                 gateway_options opts)
    : sys_(sys),
      service_(svc),
      caller_(sys.spawn(caller_actor, svc)),
      opts_(std::move(opts)),
      clients_(std::make_shared<client_registry>(opts_.clients)),
      cors_(std::make_shared<const cors_policy>(opts_.cors_origins)),
      budget_(opts_.budget ? opts_.budget
                           : std::make_shared<response_budget>(
                               opts_.response_budget_bytes)),
      started_(std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count()) {
  budget_->set_limit(opts_.response_budget_bytes);
}

void gateway::handle(front_request req, responder respond) {
  auto path = path_of(req.target);
  // Who is asking: a client's token, or none (anonymous, or a wrong token).
  std::optional<std::size_t> who;
  if (clients_->auth_required() && !req.authorization.empty())
    who = clients_->identify(req.authorization);
  // Every reply: counted per client, CORS headers (if on), one access-log
  // line at info.
  respond = [clients = clients_, cors = cors_, inner = std::move(respond),
             method = req.method, target = std::string{path},
             origin = req.origin, request_id = req.request_id, who,
             start = std::chrono::steady_clock::now()](front_reply r) {
    clients->count(who, r.status);
    if (method != "OPTIONS")
      cors->decorate(origin, r);
    if (log_enabled(log_level::info)) {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count();
      log(log_level::info, "http_request",
          {{"method", method},
           {"path", target},
           {"status", std::to_string(r.status)},
           {"ms",
            std::to_string(us / 1000) + "." + std::to_string(us % 1000 / 100)},
           {"client", who ? clients->name(*who) : std::string{"-"}},
           {"request_id", request_id}});
    }
    inner(std::move(r));
  };
  auto authorized = [&] {
    return !clients_->auth_required() || who.has_value();
  };
  if (req.method == "OPTIONS" && cors_->enabled()) {
    respond(cors_->preflight(req));
    return;
  }
  if (path == "/v1/embeddings" || path == "/embeddings") {
    if (req.method != "POST") {
      respond(method_not_allowed(req, "POST"));
      return;
    }
    if (!authorized()) {
      respond(unauthorized(req));
      return;
    }
    embeddings(req, respond, who);
    return;
  }
  if (path == "/v1/models" || path == "/models") {
    if (req.method != "GET" && req.method != "HEAD") {
      respond(method_not_allowed(req, "GET"));
      return;
    }
    if (!authorized()) {
      respond(unauthorized(req));
      return;
    }
    models(respond);
    return;
  }
  if (path == "/healthz") {
    if (req.method != "GET" && req.method != "HEAD") {
      respond(method_not_allowed(req, "GET"));
      return;
    }
    front_reply r;
    r.body = "{\"status\":\"ok\"}";
    respond(std::move(r));
    return;
  }
  if (path == "/readyz") {
    if (req.method != "GET" && req.method != "HEAD") {
      respond(method_not_allowed(req, "GET"));
      return;
    }
    readiness(respond);
    return;
  }
  if (path == "/metrics") {
    if (req.method != "GET" && req.method != "HEAD") {
      respond(method_not_allowed(req, "GET"));
      return;
    }
    if (!authorized()) {
      respond(unauthorized(req));
      return;
    }
    metrics(respond);
    return;
  }
  respond(error_reply(
      404, "Unknown request URL: " + req.method + " " + std::string{path},
      "invalid_request_error", "unknown_url"));
}

void gateway::embeddings(front_request& req, responder& respond,
                         std::optional<std::size_t> who) {
  auto decoded = openai::decode_request(req.body);
  if (!decoded) {
    respond(reply_for_error(decoded.error(), opts_.upstream_errors));
    return;
  }
  auto timeout = opts_.default_timeout;
  if (auto bad = read_timeout(req, opts_.max_timeout, timeout)) {
    respond(std::move(*bad));
    return;
  }
  // The node's memory first: a refusal here costs the client none of its
  // own limits.
  auto inputs = decoded->input.size() + decoded->token_input.size();
  auto dims = decoded->dimensions
      ? static_cast<uint64_t>(std::max<int32_t>(*decoded->dimensions, 0))
      : opts_.assumed_dimensions;
  auto base64 = decoded->encoding_format == openai::encoding::base64;
  // The texts are held too while the request is in flight: decoded here,
  // and encoded again for the upstream.
  auto texts = 2 * static_cast<uint64_t>(req.body.size());
  auto lease
      = budget_->acquire(texts + response_estimate(inputs, dims, base64));
  if (!lease) {
    respond(reply_for_error(over_budget(*budget_, inputs, dims, base64),
                            opts_.upstream_errors));
    return;
  }
  if (who) {
    // The client's limits, on the same estimate the runtime's limits use
    // (exact for token arrays).
    uint64_t tokens = 0;
    for (const auto& text : decoded->input)
      tokens += estimate_tokens(text);
    for (const auto& ids : decoded->token_input)
      tokens += ids.size();
    if (auto refused = clients_->admit(*who, tokens)) {
      respond(std::move(*refused));
      return;
    }
  }
  embed_request er;
  er.model = std::move(decoded->model);
  er.inputs = std::move(decoded->input);
  er.token_inputs = std::move(decoded->token_input);
  er.dimensions = decoded->dimensions.value_or(0);
  er.user = std::move(decoded->user);
  er.request_id = std::move(req.request_id);
  er.timeout = std::chrono::duration_cast<caf::timespan>(timeout);
  auto enc = decoded->encoding_format;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // The response names the model as the caller did (not the upstream's
  // name of a `model_map` alias), as OpenAI echoes the request's model.
  auto model = er.model;
  auto call = std::make_shared<embed_call>();
  call->req = std::move(er);
  call->done = [respond = std::move(respond), enc, deadline, timeout,
                model = std::move(model), detail = opts_.upstream_errors, texts,
                lease = std::make_shared<response_budget::lease>(
                    std::move(*lease))](caf::expected<embed_result> r) {
    if (r) {
      r->model = model;
      // The true size, now that it is known (the request may have
      // named no dimensions).
      auto dims = r->embeddings.empty() ? 0 : r->embeddings[0].size();
      lease->resize(texts
                    + response_estimate(r->embeddings.size(), dims,
                                        enc == openai::encoding::base64));
      // The lease goes when the reply has been written.
      respond(reply_for_result(std::move(*r), enc, lease));
      return;
    }
    // An attempt cut short by the caller's deadline comes back as a
    // connection failure (its timeout was the time left); past the
    // deadline, the client's answer is 504 whatever the last attempt said.
    if (error_code(r.error()) == errc::connection_failed
        && std::chrono::steady_clock::now() >= deadline) {
      respond(reply_for_error(make_error(errc::deadline_exceeded,
                                         "deadline of "
                                             + std::to_string(timeout.count())
                                             + " ms exceeded; last error: "
                                             + error_detail(r.error())),
                              detail));
      return;
    }
    respond(reply_for_error(r.error(), detail));
  };
  caf::anon_send(caller_, std::move(call));
}

void gateway::models(responder& respond) {
  // The configured names, plus what the runtime's status says it serves:
  // on a front node, the models its peers serve.
  ask_service<node_status>(
      sys_, service_,
      std::chrono::duration_cast<caf::timespan>(opts_.health_timeout),
      status_atom_v,
      [names = opts_.models, started = started_,
       respond = std::move(respond)](caf::expected<node_status> st) mutable {
        if (st)
          for (auto& m : st->models)
            if (std::find(names.begin(), names.end(), m) == names.end())
              names.push_back(m);
        std::string body = "{\"object\":\"list\",\"data\":[";
        for (std::size_t i = 0; i < names.size(); ++i) {
          body += i == 0 ? "{\"id\":" : ",{\"id\":";
          append_json_string(body, names[i]);
          body += ",\"object\":\"model\",\"created\":" + std::to_string(started)
              + ",\"owned_by\":\"embedrt\"}";
        }
        front_reply r;
        r.body = body + "]}";
        respond(std::move(r));
      });
}

void gateway::readiness(responder& respond) {
  ask_service<health_report>(
      sys_, service_,
      std::chrono::duration_cast<caf::timespan>(opts_.health_timeout),
      health_atom_v,
      [respond = std::move(respond)](caf::expected<health_report> h) {
        front_reply r;
        if (!h) {
          r = error_reply(503,
                          "no health report from the runtime: "
                              + render_error(h.error()),
                          "server_error", "not_ready");
        } else {
          r.status = h->ready ? 200 : 503;
          r.body = readiness_body(*h);
        }
        if (r.status == 503)
          r.headers.emplace_back("retry-after", "1");
        respond(std::move(r));
      });
}

void gateway::metrics(responder& respond) {
  ask_service<metrics_snapshot>(
      sys_, service_,
      std::chrono::duration_cast<caf::timespan>(opts_.health_timeout),
      metrics_atom_v,
      [respond = std::move(respond), registry = clients_,
       budget = budget_](caf::expected<metrics_snapshot> m) {
        if (!m) {
          respond(error_reply(
              503, "no metrics from the runtime: " + render_error(m.error()),
              "server_error", "metrics_unavailable"));
          return;
        }
        front_reply r;
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r.body = render_prometheus(*m) + registry->render_metrics()
            + budget->render_metrics();
        respond(std::move(r));
      });
}

} // namespace embedrt::serve
