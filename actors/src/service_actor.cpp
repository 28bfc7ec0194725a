#include "connection_actor.hpp"
#include "embedrt/io_runtime.hpp"
#include "embedrt/log.hpp"
#include "embedrt/protocol/endpoint.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/service.hpp"
#include "metrics_actor.hpp"
#include "pool_actor.hpp"
#include "request_actor.hpp"

#include <algorithm>
#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <caf/spawn_options.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <random>

namespace embedrt {

namespace {

struct upstream_entry {
  std::shared_ptr<const detail::pool_env> env;
  pool_actor pool;
};

struct service_state {
  static inline const char* name = "embedrt.service";

  std::shared_ptr<io_runtime> io;
  std::shared_ptr<const detail::request_env> req_env;
  std::vector<upstream_entry> upstreams;
  uint64_t next_request = 0;
  /// Requests accepted so far (requests in flight = accepted - answered).
  int64_t accepted = 0;
  /// Aggregates metrics; answers `metrics` (metrics_actor.hpp).
  detail::metrics_actor metrics;
  std::mt19937_64 seeder;
  /// Pools, shared with the exit functor that stops them with the service.
  std::shared_ptr<std::vector<pool_actor>> pools
      = std::make_shared<std::vector<pool_actor>>();
};

using service_ptr = service_actor::stateful_pointer<service_state>;

/// Aggregates the health answers of all pools into one report.
struct health_collector {
  health_report report;
  std::size_t pending = 0;
  caf::typed_response_promise<health_report> rp;

  void add(upstream_health h) {
    if ((h.state == "up" || h.state == "half_open") && h.connections > 0)
      report.ready = true;
    report.upstreams.emplace_back(std::move(h));
    if (--pending == 0)
      rp.deliver(std::move(report));
  }
};

service_actor::behavior_type
service_fn(service_ptr self, std::shared_ptr<io_runtime> io,
           std::shared_ptr<const detail::request_env> req_env,
           std::vector<std::shared_ptr<const detail::pool_env>> envs,
           uint64_t seed, detail::metrics_actor metrics) {
  auto& st = self->state;
  st.metrics = std::move(metrics);
  st.io = std::move(io);
  st.req_env = std::move(req_env);
  st.seeder.seed(seed);
  for (auto& env : envs) {
    st.upstreams.push_back(
        {env, self->spawn<caf::monitored>(detail::pool_actor_fn, env)});
    st.pools->push_back(st.upstreams.back().pool);
  }
  // When the service ends, its pools end with it (and they stop their
  // connections) instead of lingering until their last request timeout.
  self->attach_functor([pools = st.pools](const caf::error&) {
    for (auto& p : *pools)
      caf::anon_send_exit(p, caf::exit_reason::user_shutdown);
  });
  // A pool only dies through a bug; restart it so the upstream stays usable.
  self->set_down_handler([self](caf::down_msg& dm) {
    for (auto& up : self->state.upstreams)
      if (up.pool && up.pool.address() == dm.source) {
        log(log_level::error, "pool_restarted",
            {{"upstream", up.env->cfg.name},
             {"reason", caf::to_string(dm.reason)}});
        up.pool = self->spawn<caf::monitored>(detail::pool_actor_fn, up.env);
        self->state.pools->push_back(up.pool);
      }
  });
  return {
      [self](embed_atom, embed_request& req) -> caf::delegated<embed_result> {
        auto& st = self->state;
        ++st.accepted;
        if (req.request_id.empty())
          req.request_id = "req-" + std::to_string(++st.next_request);
        std::vector<detail::route> routes;
        for (auto& up : st.upstreams) {
          const auto& cfg = up.env->cfg;
          if (!cfg.models.empty()
              && std::find(cfg.models.begin(), cfg.models.end(), req.model)
                  == cfg.models.end())
            continue;
          detail::route rt;
          rt.pool = up.pool;
          rt.name = cfg.name;
          rt.profile = up.env->profile;
          auto mapped = cfg.model_map.find(req.model);
          rt.model = mapped != cfg.model_map.end() ? mapped->second : req.model;
          routes.emplace_back(std::move(rt));
        }
        auto worker = self->spawn(detail::request_actor_fn, st.req_env,
                                  std::move(routes), st.seeder());
        return self->delegate(worker, embed_atom_v, std::move(req));
      },
      [self](metrics_atom) -> caf::delegated<metrics_snapshot> {
        auto& st = self->state;
        std::vector<pool_actor> pools;
        for (auto& up : st.upstreams)
          pools.push_back(up.pool);
        return self->delegate(st.metrics, metrics_atom_v, std::move(pools),
                              st.accepted);
      },
      [self](health_atom) -> caf::result<health_report> {
        auto& st = self->state;
        auto col = std::make_shared<health_collector>();
        col->rp = self->make_response_promise<health_report>();
        col->pending = st.upstreams.size();
        auto rp = col->rp;
        if (col->pending == 0) {
          col->rp.deliver(health_report{});
          return rp;
        }
        for (auto& up : st.upstreams) {
          auto name = up.env->cfg.name;
          auto url = up.env->cfg.base_url;
          self->request(up.pool, std::chrono::seconds{2}, health_atom_v)
              .then(
                  [col](upstream_health& h) {
                    col->add(std::move(h));
                  },
                  [col, name, url](caf::error&) {
                    upstream_health h;
                    h.name = name;
                    h.base_url = url;
                    h.state = "unresponsive";
                    col->add(std::move(h));
                  });
        }
        return rp;
      },
  };
}

} // namespace

caf::expected<service_actor>
spawn_service(caf::actor_system& sys, runtime_config cfg, service_hooks hooks) {
  if (cfg.upstreams.empty())
    return make_error(errc::invalid_input, "no upstream configured");
  if (cfg.retry.max_attempts < 1)
    return make_error(errc::invalid_input, "retry.max_attempts must be >= 1");
  auto io
      = std::make_shared<io_runtime>(std::max<std::size_t>(1, cfg.io_threads));
  // The metrics actor knows the upstreams by name from the start.
  std::vector<std::string> names;
  for (auto& up : cfg.upstreams) {
    if (up.name.empty())
      if (auto url = parse_base_url(up.base_url))
        up.name = url->host + ":" + std::to_string(url->port);
    names.push_back(up.name);
  }
  auto metrics = detail::spawn_metrics_actor(sys, cfg.metrics, names,
                                             hooks.on_request_recorded);
  detail::metrics_actor sink = cfg.metrics ? metrics : detail::metrics_actor{};
  std::vector<std::shared_ptr<const detail::pool_env>> envs;
  for (auto& up : cfg.upstreams) {
    auto url = parse_base_url(up.base_url);
    if (!url)
      return url.error();
    if (up.connections < 1)
      return make_error(errc::invalid_input,
                        "upstream " + up.base_url
                            + ": connections must be >= 1");
    if (up.name.empty())
      up.name = url->host + ":" + std::to_string(url->port);
    auto cenv = std::make_shared<detail::connection_env>();
    cenv->io = io;
    cenv->transport.host = url->host;
    cenv->transport.port = url->port;
    cenv->transport.max_body_bytes = up.max_response_bytes;
    if (url->tls) {
      std::string err;
      detail::tls_options topts;
      topts.verify = up.tls_verify;
      topts.ca_file = up.ca_file;
      cenv->transport.tls = detail::make_tls_config(topts, err);
      if (!cenv->transport.tls)
        return make_error(errc::tls_failed, "upstream " + up.name + ": " + err);
    }
    endpoint_config ep;
    ep.url = *url;
    ep.provider = up.provider;
    ep.azure_api_version = up.azure_api_version;
    cenv->target = embeddings_target(ep);
    cenv->auth = auth_header(up.provider, up.api_key);
    cenv->upstream_name = up.name;
    cenv->base64 = up.base64;
    cenv->crash_marker = hooks.crash_marker;
    auto penv = std::make_shared<detail::pool_env>();
    penv->cfg = up;
    penv->cfg.api_key.clear(); // Only the connection env keeps the secret.
    penv->profile = profile_for(up.provider);
    penv->conn_env = std::move(cenv);
    penv->retry = cfg.retry;
    penv->batching = up.batching;
    penv->metrics = sink;
    if (up.breaker.enabled) {
      auto benv = std::make_shared<detail::breaker_env>();
      benv->upstream = up.name;
      benv->cfg = up.breaker;
      benv->seed
          = (cfg.seed != 0 ? cfg.seed : std::random_device{}()) + envs.size();
      static_assert(static_cast<uint8_t>(breaker_state::open) == breaker_open
                    && static_cast<uint8_t>(breaker_state::half_open)
                        == breaker_half_open);
      // Every transition is counted (metrics) and passed to the hook.
      benv->on_transition = [sink, cb = hooks.on_breaker_transition](
                                const std::string& upstream,
                                const detail::breaker_transition& t) {
        if (sink)
          detail::record_breaker_transition(sink, upstream,
                                            static_cast<uint8_t>(t.from),
                                            static_cast<uint8_t>(t.to));
        if (cb)
          cb(upstream, t.from, t.to);
      };
      penv->breaker = std::move(benv);
    }
    if (hooks.on_connection_spawned) {
      auto cb = hooks.on_connection_spawned;
      auto name = up.name;
      penv->on_connection_spawned = [cb, name](const connection_actor& hdl) {
        cb(name, caf::actor_cast<caf::actor>(hdl));
      };
    }
    envs.emplace_back(std::move(penv));
  }
  auto renv = std::make_shared<detail::request_env>();
  renv->retry = cfg.retry;
  renv->default_timeout = cfg.default_timeout;
  renv->metrics = sink;
  auto seed = cfg.seed != 0 ? cfg.seed : std::random_device{}();
  return sys.spawn(service_fn, std::move(io), std::move(renv), std::move(envs),
                   seed, std::move(metrics));
}

} // namespace embedrt
