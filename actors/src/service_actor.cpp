#include "connection_actor.hpp"
#include "distributed_detail.hpp"
#include "embedrt/io_runtime.hpp"
#include "embedrt/log.hpp"
#include "embedrt/protocol/endpoint.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/service.hpp"
#include "fan_in.hpp"
#include "metrics_actor.hpp"
#include "pool_actor.hpp"
#include "request_actor.hpp"
#include "routing.hpp"
#include "service_cache.hpp"

#include <algorithm>
#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <caf/spawn_options.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <random>
#include <unordered_map>

namespace embedrt {

namespace {

using namespace detail;

/// One upstream as the service supervises it.
struct upstream_entry {
  std::shared_ptr<const pool_env> env;
  /// Null while a restart is pending (requests fail over meanwhile).
  pool_supervised pool;
  restart_intensity intensity{10, milliseconds{10000}};
  /// Consecutive restarts (backoff exponent) and times the restart intensity
  /// was exceeded (down backoff exponent); both start again at 0 after a
  /// quiet period (no crash for the intensity window `within`).
  uint32_t restarts = 0;
  uint32_t downs = 0;
  /// When the pool last died (the quiet period is measured from it).
  restart_intensity::time_point last_down{};
  /// Restart timer epoch: a timer of another epoch is stale.
  uint64_t epoch = 0;
  /// The pool's last word on whether it can serve (`pool_watcher`): not
  /// down, breaker not open, health check passing, not misconfigured.
  bool available = true;
  /// Requests routed here first and not answered yet (counted only for
  /// models served by more than one upstream; see `order_routes`).
  int64_t outstanding = 0;
};

/// The embedding cache: its settings and the opened persistent store (both
/// kept to start the cache again after it failed).
struct cache_setup {
  cache_config cfg;
  std::shared_ptr<persistent_store> store;
  std::string crash_marker;
};

/// How to spawn the metrics actor again after it died.
struct metrics_setup {
  bool enabled = true;
  std::vector<std::string> names;
  std::function<void(const request_record&)> on_record;
};

struct service_state {
  static inline const char* name = "embedrt.service";

  std::shared_ptr<io_runtime> io;
  /// Given to every request actor; rebuilt when the metrics actor restarts.
  std::shared_ptr<const request_env> req_env;
  std::vector<upstream_entry> upstreams;
  uint64_t next_request = 0;
  /// Requests accepted so far (requests in flight = accepted - answered).
  int64_t accepted = 0;
  /// Aggregates metrics; answers `metrics` (metrics_actor.hpp). Monitored.
  metrics_actor metrics;
  metrics_setup metrics_cfg;
  std::mt19937_64 seeder;
  /// `health` requests waiting for the pools (answered `cancelled` if the
  /// service ends first).
  held_promises<health_report> held_health{"the service stopped"};
  held_promises<node_status> held_status{"the service stopped"};
  held_promises<metrics_snapshot> held_metrics{"the service stopped"};
  /// The embedding cache (null: cache off; service_cache.hpp): looked up
  /// here before a request actor gets its job, settled by its request_done.
  std::unique_ptr<service_cache> cache;
  cache_setup cache_cfg;
  /// The epoch of the newest cache (each start takes the next one).
  uint64_t cache_epochs = 0;
  /// A lookup's keys and hashes (buffers kept between lookups).
  std::vector<std::string> cache_keys;
  std::vector<uint64_t> cache_hashes;
  /// The persistent store's disk actor (a monitored child) and write queue
  /// (null: no persistent store).
  std::shared_ptr<cache_disk> disk;

  /// The live children (pools, metrics actor), shared with the exit functor
  /// that stops them with the service. Dead handles are replaced, not kept.
  std::shared_ptr<std::vector<caf::actor>> children
      = std::make_shared<std::vector<caf::actor>>();
  /// The request actors spawned (busy or idle), held weakly and shared with
  /// the exit functor, which sends the live ones an exit message (a busy
  /// one answers its caller `cancelled`). Ended ones are pruned once a
  /// quarter of the live count found at the last pruning (at least
  /// `min_prune`) has been added: the list stays within 1.25 times the
  /// live request actors plus `min_prune`. (A weak reference keeps an ended
  /// actor's memory block, not its state.)
  std::shared_ptr<std::vector<caf::weak_actor_ptr>> requests
      = std::make_shared<std::vector<caf::weak_actor_ptr>>();
  std::size_t prune_at = min_prune;
  static constexpr std::size_t min_prune = 64;
  /// Request actors free for the next request (each told the service
  /// `request_done`), most recently freed last. Request actors are reused:
  /// an actor's end costs a push to CAF's clock thread (docs/profile.md).
  std::vector<request_impl> idle;
  /// At most this many are kept idle; one freed beyond it is ended.
  static constexpr std::size_t max_idle = 256;

  /// The idle request actors are ended by an exit message, not by dropping
  /// the last handle here: the state can be destroyed on CAF's clock
  /// thread (when a request timeout of the service held its last
  /// reference), and an actor destroyed there pushes to the clock's own
  /// bounded queue (CAF 0.17.6 `local_actor::cleanup`): more than its 64
  /// slots at once and the clock thread waits for itself. An actor with a
  /// message to handle is held by the scheduler and ends on a worker.
  ~service_state() {
    for (auto& r : idle)
      caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
  }
  /// Request actors alive (busy + idle; each monitored).
  std::size_t live_requests = 0;
  /// Busy request actors counted in an upstream's `outstanding`, by actor
  /// id -> upstream index.
  std::unordered_map<caf::actor_id, std::size_t> routed;
  /// Draws of the power-of-two-choices pick.
  std::mt19937_64 picker;
};

using service_ptr = service_impl::stateful_pointer<service_state>;

void replace_child(service_ptr self, const caf::actor_addr& old,
                   caf::actor fresh) {
  auto& kids = *self->state.children;
  kids.erase(std::remove_if(kids.begin(), kids.end(),
                            [&](const caf::actor& a) {
                              return !a || a.address() == old;
                            }),
             kids.end());
  if (fresh)
    kids.push_back(std::move(fresh));
}

/// The metrics sink pools and request actors send to (null: metrics off).
metrics_actor sink(service_ptr self) {
  auto& st = self->state;
  return st.metrics_cfg.enabled ? st.metrics : metrics_actor{};
}

void spawn_pool(service_ptr self, std::size_t idx) {
  auto& st = self->state;
  auto& up = st.upstreams[idx];
  up.pool = self->spawn<caf::monitored>(pool_actor_fn, up.env);
  replace_child(self, caf::actor_addr{}, caf::actor_cast<caf::actor>(up.pool));
  if (auto s = sink(self); s != up.env->metrics)
    self->send(up.pool, sink_atom_v, s);
  up.available = true;
  self->send(up.pool, watch_atom_v, caf::actor_cast<pool_watcher>(self));
}

/// A pool's availability changed (`pool_watcher`).
void on_availability(service_ptr self, bool available) {
  auto& st = self->state;
  auto from = caf::actor_cast<caf::actor_addr>(self->current_sender());
  for (auto& up : st.upstreams)
    if (up.pool && up.pool.address() == from)
      up.available = available;
}

/// A pool died (a bug): restart it after a doubling backoff; more than R
/// restarts within T and it waits the longer down backoff first.
void on_pool_down(service_ptr self, std::size_t idx, const caf::down_msg& dm) {
  auto& st = self->state;
  auto& up = st.upstreams[idx];
  replace_child(self, dm.source, nullptr);
  up.pool = nullptr;
  const auto& sup = up.env->cfg.supervision;
  auto now = restart_intensity::time_point{
      std::chrono::duration_cast<restart_intensity::time_point::duration>(
          self->clock().now().time_since_epoch())};
  if (up.last_down != restart_intensity::time_point{}
      && now - up.last_down > sup.within) {
    up.restarts = 0;
    up.downs = 0;
  }
  up.last_down = now;
  milliseconds wait;
  if (up.intensity.record(now)) {
    wait = doubling_backoff(sup.restart_backoff, sup.restart_backoff_cap,
                            up.restarts++);
  } else {
    wait = doubling_backoff(sup.down_backoff, sup.down_backoff_cap, up.downs++);
    up.intensity.reset();
  }
  log(log_level::error, "pool_down",
      {{"upstream", up.env->cfg.name},
       {"reason", caf::to_string(dm.reason)},
       {"restart_in_ms", std::to_string(wait.count())}});
  self->delayed_send(self, wait, restart_atom_v, static_cast<uint32_t>(idx),
                     ++up.epoch);
}

void on_restart_pool(service_ptr self, uint32_t idx, uint64_t epoch) {
  auto& st = self->state;
  if (idx >= st.upstreams.size() || st.upstreams[idx].epoch != epoch
      || st.upstreams[idx].pool)
    return;
  spawn_pool(self, idx);
  log(log_level::info, "pool_restarted",
      {{"upstream", st.upstreams[idx].env->cfg.name}});
}

/// Gives new request actors (and the pools) the current metrics sink.
void update_request_env(service_ptr self) {
  auto& st = self->state;
  auto env = std::make_shared<request_env>(*st.req_env);
  env->metrics = sink(self);
  env->disk = st.disk && st.cache ? st.disk->actor : disk_actor{};
  st.req_env = std::move(env);
}

/// The metrics actor died (a bug): a fresh one (counters start again at 0,
/// which Prometheus reads as a counter reset) takes the events from now on.
void on_metrics_down(service_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  log(log_level::error, "metrics_actor_down",
      {{"reason", caf::to_string(dm.reason)}});
  replace_child(self, dm.source, nullptr);
  st.metrics
      = spawn_metrics_actor(self->system(), st.metrics_cfg.enabled,
                            st.metrics_cfg.names, st.metrics_cfg.on_record);
  self->monitor(st.metrics);
  replace_child(self, caf::actor_addr{},
                caf::actor_cast<caf::actor>(st.metrics));
  update_request_env(self);
  for (auto& up : st.upstreams)
    if (up.pool)
      self->send(up.pool, sink_atom_v, sink(self));
}

std::vector<pool_actor> live_pools(service_ptr self) {
  std::vector<pool_actor> pools;
  for (auto& up : self->state.upstreams)
    pools.push_back(up.pool);
  return pools;
}

// -- the embedding cache (docs/caching.md)
// -------------------------------------

void start_cache(service_ptr self) {
  auto& st = self->state;
  st.cache = std::make_unique<service_cache>(
      st.cache_cfg.cfg, st.disk, ++st.cache_epochs, st.cache_cfg.crash_marker);
}

/// Sends the cache's notifications to the request actors waiting for
/// inputs in flight.
void send_notices(service_ptr self) {
  auto& st = self->state;
  for (auto& n : st.cache->take_notices()) {
    if (!n.to)
      continue;
    auto to = caf::actor_cast<cache_waiter>(std::move(n.to));
    switch (n.what) {
      case cache_notice::kind::filled:
        self->send(to, cache_filled_atom_v, n.ticket, std::move(n.vec));
        break;
      case cache_notice::kind::owner:
        self->send(to, cache_owner_atom_v, n.ticket);
        break;
      case cache_notice::kind::wanted:
        self->send(to, cache_wanted_atom_v, n.ticket);
        break;
    }
  }
}

void disk_failed(service_ptr self, const char* what, const caf::error& err) {
  if (self->state.cache)
    self->state.cache->disk_failed();
  log(log_level::warn, "cache_store_error",
      {{"operation", what}, {"reason", caf::to_string(err)}});
}

/// Sends the filled vectors not written yet to the disk actor: one write
/// in flight, the next batch is whatever accumulated meanwhile (at most
/// `max_write_backlog` of them; more are counted as errors, not written).
/// No timeout: the disk actor answers every write or, gone, bounces it as
/// an error; a CAF 0.17 request timeout is never cancelled and would hold
/// the service alive until it fires (see `on_metrics_with_cache`).
void flush_writes(service_ptr self) {
  auto& d = self->state.disk;
  if (!d || !d->actor || d->writing || d->keys.empty())
    return;
  d->writing = true;
  self->request(d->actor, caf::infinite, disk_put_atom_v, std::move(d->keys),
                std::move(d->vecs))
      .then(
          [self](int64_t written) {
            if (self->state.cache)
              self->state.cache->disk_written(written);
            self->state.disk->writing = false;
            flush_writes(self);
          },
          [self](caf::error& err) {
            disk_failed(self, "write", err);
            self->state.disk->writing = false;
            flush_writes(self);
          });
  d->keys.clear();
  d->vecs.clear();
}

/// The cache failed (a bug: an exception in its code): a fresh, empty one
/// serves new requests at once; requests waiting for inputs in flight are
/// told to send them themselves, so a failed cache never loses a reply.
/// Settles of the old cache's tickets are told apart by their epoch.
void restart_cache(service_ptr self, const char* what) {
  auto& st = self->state;
  log(log_level::error, "cache_failed", {{"reason", what}});
  start_cache(self);
  for (auto& w : *st.requests)
    if (auto r = w.lock())
      caf::anon_send(caf::actor_cast<cache_waiter>(r), cache_lost_atom_v);
}

/// What a request actor hands back to the cache (with request_done, or at
/// once while it waits for others' inputs).
void on_cache_settle(service_ptr self, cache_settle& s) {
  auto& st = self->state;
  if (!st.cache || s.epoch != st.cache->epoch())
    return;
  st.cache->settle(s, self->current_sender());
  if (st.cache->has_notices())
    send_notices(self);
  flush_writes(self);
}

/// The persistent store's disk actor died: the store is off from now on
/// (the memory cache goes on).
void on_disk_down(service_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  log(log_level::error, "cache_store_down",
      {{"reason", caf::to_string(dm.reason)}});
  replace_child(self, dm.source, nullptr);
  st.disk->actor = nullptr;
  st.disk->keys.clear();
  st.disk->vecs.clear();
  update_request_env(self);
}

/// The metrics snapshot with the cache's counters added. The request goes
/// to a child that always answers (the metrics actor answers what it holds
/// when it ends), and a child gone before it read the request bounces it as
/// an error: no timeout. A CAF 0.17 request timeout is never cancelled and
/// holds the service alive until it fires, so a host that dropped its last
/// handle after a metrics call waited that long for its actor system to
/// shut down.
caf::result<metrics_snapshot> on_metrics_with_cache(service_ptr self) {
  auto& st = self->state;
  auto rp = self->make_response_promise<metrics_snapshot>();
  auto id = st.held_metrics.hold(rp);
  self->request(st.metrics, caf::infinite, metrics_atom_v, live_pools(self),
                st.accepted)
      .then(
          [self, id, cm{st.cache->stats()}](metrics_snapshot& snap) {
            snap.cache = cm;
            self->state.held_metrics.deliver(id, std::move(snap));
          },
          [self, id](caf::error& err) {
            self->state.held_metrics.fail(id, std::move(err));
          });
  return rp;
}

/// A request actor's request is over: it no longer counts as outstanding
/// at the upstream it was routed to first.
void count_off(service_ptr self, caf::actor_id worker) {
  auto& st = self->state;
  if (auto i = st.routed.find(worker); i != st.routed.end()) {
    if (i->second < st.upstreams.size())
      --st.upstreams[i->second].outstanding;
    st.routed.erase(i);
  }
}

/// A request actor is free again: counted off its upstream and kept for the
/// next request (or ended, beyond `max_idle`).
void free_worker(service_ptr self, request_impl worker) {
  auto& st = self->state;
  count_off(self, worker.id());
  if (st.idle.size() < service_state::max_idle) {
    st.idle.emplace_back(std::move(worker));
    return;
  }
  self->demonitor(worker.address());
  --st.live_requests;
  self->send_exit(worker, caf::exit_reason::user_shutdown);
}

void on_request_done(service_ptr self) {
  if (auto worker = caf::actor_cast<request_impl>(self->current_sender()))
    free_worker(self, std::move(worker));
}

/// A request actor ended (an exception in a handler: it answered its caller
/// `internal error` first).
void on_request_down(service_ptr self, const caf::down_msg& dm) {
  auto& st = self->state;
  --st.live_requests;
  count_off(self, dm.source.id());
  if (st.cache) {
    st.cache->actor_gone(dm.source);
    send_notices(self);
  }
  st.idle.erase(std::remove_if(st.idle.begin(), st.idle.end(),
                               [&](const request_impl& r) {
                                 return r.address() == dm.source;
                               }),
                st.idle.end());
}

void on_down(service_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  if (st.metrics && st.metrics.address() == dm.source) {
    on_metrics_down(self, dm);
    return;
  }
  if (st.disk && st.disk->actor && st.disk->actor.address() == dm.source) {
    on_disk_down(self, dm);
    return;
  }
  for (std::size_t i = 0; i < st.upstreams.size(); ++i)
    if (st.upstreams[i].pool && st.upstreams[i].pool.address() == dm.source) {
      on_pool_down(self, i, dm);
      return;
    }
  // Pools, the metrics and the disk actor are named above; every other
  // monitored actor is a request actor.
  on_request_down(self, dm);
}

/// The upstreams serving `model`, in configuration order.
std::vector<std::size_t> candidates_for(service_ptr self,
                                        const std::string& model) {
  std::vector<std::size_t> out;
  auto& ups = self->state.upstreams;
  for (std::size_t i = 0; i < ups.size(); ++i) {
    const auto& cfg = ups[i].env->cfg;
    if (cfg.models.empty()
        || std::find(cfg.models.begin(), cfg.models.end(), model)
            != cfg.models.end())
      out.push_back(i);
  }
  return out;
}

/// What routing knows of each upstream (routing.hpp).
std::vector<route_load> route_loads(service_ptr self) {
  std::vector<route_load> loads;
  for (auto& up : self->state.upstreams)
    loads.push_back({up.pool && up.available, up.outstanding,
                     up.env->cfg.weight, up.env->cfg.priority});
  return loads;
}

/// The model upstream `i` is asked for in place of `model` (its
/// `model_map`).
const std::string& mapped_model(service_ptr self, std::size_t i,
                                const std::string& model) {
  const auto& map = self->state.upstreams[i].env->cfg.model_map;
  auto mapped = map.find(model);
  return mapped != map.end() ? mapped->second : model;
}

std::vector<route> routes_for(service_ptr self,
                              const std::vector<std::size_t>& order,
                              const std::string& model) {
  std::vector<route> routes;
  for (auto i : order) {
    auto& up = self->state.upstreams[i];
    const auto& cfg = up.env->cfg;
    route rt;
    rt.pool = up.pool;
    rt.name = cfg.name;
    rt.profile = up.env->profile;
    rt.model = mapped_model(self, i, model);
    routes.emplace_back(std::move(rt));
  }
  return routes;
}

/// Remembers a request actor (weakly) for the exit functor.
void track_request(service_ptr self, const request_impl& worker) {
  auto& st = self->state;
  auto& reqs = *st.requests;
  if (reqs.size() >= st.prune_at) {
    reqs.erase(std::remove_if(reqs.begin(), reqs.end(),
                              [](const caf::weak_actor_ptr& w) {
                                return w.lock() == nullptr;
                              }),
               reqs.end());
    st.prune_at
        = reqs.size() + std::max(service_state::min_prune, reqs.size() / 4);
  }
  reqs.emplace_back(caf::actor_cast<caf::weak_actor_ptr>(worker));
}

/// Looks the request's inputs up in the cache: the answer goes with the
/// job, no message of its own.
caf::delegated<embed_result> embed_cached(service_ptr self, request_impl worker,
                                          request_job& job,
                                          embed_request& req) {
  auto& st = self->state;
  try {
    // Emplaced, not assigned: GCC 12 (-O2 with TSan) takes an assignment
    // to the empty optional for a read of its payload (-Wmaybe-uninitialized).
    job.cache.emplace(
        st.cache->lookup(st.cache_keys, st.cache_hashes,
                         caf::actor_cast<caf::strong_actor_ptr>(worker)));
    job.spare_floats = st.cache->take_spare_floats();
    if (st.cache->has_notices())
      send_notices(self); // owners of inputs this request waits for
  } catch (const std::exception& e) {
    // The request goes on uncached; the cache starts again empty.
    restart_cache(self, e.what());
  }
  trim_cache_keys(st.cache_keys);
  return self->delegate(caf::actor_cast<request_actor>(worker), embed_atom_v,
                        std::move(job), std::move(req));
}

caf::delegated<embed_result> on_embed(service_ptr self, embed_request& req) {
  auto& st = self->state;
  ++st.accepted;
  if (req.request_id.empty())
    req.request_id = "req-" + std::to_string(++st.next_request);
  auto order = candidates_for(self, req.model);
  if (order.size() > 1)
    order = order_routes(route_loads(self), std::move(order), st.picker);
  bool cached = st.cache && !order.empty();
  if (cached) {
    // Keys (under the first route's model) first, and their index buckets
    // and counters asked for now: the memory reads overlap the work below
    // instead of stalling the lookup.
    make_cache_keys(req, mapped_model(self, order.front(), req.model),
                    st.cache_keys, st.cache_hashes);
    st.cache->prefetch(st.cache_hashes);
  }
  auto routes = routes_for(self, order, req.model);
  request_impl worker;
  if (!st.idle.empty()) {
    worker = std::move(st.idle.back());
    st.idle.pop_back();
  } else {
    worker = self->spawn(request_actor_fn, caf::actor_cast<request_owner>(self),
                         st.seeder());
    self->monitor(worker);
    ++st.live_requests;
    track_request(self, worker);
  }
  if (order.size() > 1) {
    // Counted until the request actor is free again (or ends).
    ++st.upstreams[order.front()].outstanding;
    st.routed.emplace(worker.id(), order.front());
  }
  request_job job;
  job.env = st.req_env;
  job.routes = std::move(routes);
  if (cached)
    return embed_cached(self, std::move(worker), job, req);
  return self->delegate(caf::actor_cast<request_actor>(worker), embed_atom_v,
                        std::move(job), std::move(req));
}

/// Asks every pool for its health; `done(upstreams, ready)` gets one entry
/// per upstream in configuration order (a pool that does not answer, or a
/// slot whose pool is restarting, is named so).
template <class Done>
void with_upstream_health(service_ptr self, Done done) {
  collect_health(
      self, live_pools(self),
      [self, done{std::move(done)}](
          std::vector<std::optional<upstream_health>> answers) mutable {
        auto& st = self->state;
        std::vector<upstream_health> ups;
        bool ready = false;
        for (std::size_t i = 0; i < answers.size(); ++i) {
          auto& ans = answers[i];
          upstream_health h;
          if (ans) {
            h = std::move(*ans);
          } else {
            h.name = st.upstreams[i].env->cfg.name;
            h.base_url = st.upstreams[i].env->cfg.base_url;
            h.state = st.upstreams[i].pool ? "unresponsive" : "restarting";
          }
          if ((h.state == "up" || h.state == "half_open") && h.connections > 0)
            ready = true;
          ups.emplace_back(std::move(h));
        }
        done(std::move(ups), ready);
      });
}

caf::result<health_report> on_health(service_ptr self) {
  auto& st = self->state;
  auto rp = self->make_response_promise<health_report>();
  auto id = st.held_health.hold(rp);
  with_upstream_health(
      self, [self, id](std::vector<upstream_health> ups, bool ready) {
        health_report report;
        report.ready = ready;
        report.upstreams = std::move(ups);
        self->state.held_health.deliver(id, std::move(report));
      });
  return rp;
}

/// Capacity and health for routers: models served and, over the upstreams
/// that can serve now, connections, idle ones and the queue.
caf::result<node_status> on_status(service_ptr self) {
  auto& st = self->state;
  auto rp = self->make_response_promise<node_status>();
  auto id = st.held_status.hold(rp);
  with_upstream_health(
      self, [self, id](std::vector<upstream_health> ups, bool ready) {
        auto& st = self->state;
        node_status s;
        s.wire = wire_fingerprint();
        s.ready = ready;
        s.in_flight = static_cast<int64_t>(st.live_requests - st.idle.size());
        for (auto& up : st.upstreams) {
          const auto& models = up.env->cfg.models;
          if (models.empty())
            s.all_models = true;
          for (auto& m : models)
            if (std::find(s.models.begin(), s.models.end(), m)
                == s.models.end())
              s.models.push_back(m);
        }
        for (auto& h : ups)
          if (h.state == "up" || h.state == "half_open") {
            s.connections += h.connections;
            s.idle_connections += h.idle_connections;
            s.queued += h.queued_requests;
          }
        s.upstreams = std::move(ups);
        st.held_status.deliver(id, std::move(s));
      });
  return rp;
}

service_impl::behavior_type
service_fn(service_ptr self, std::shared_ptr<io_runtime> io,
           std::shared_ptr<const request_env> req_env,
           std::vector<std::shared_ptr<const pool_env>> envs, uint64_t seed,
           metrics_setup mcfg, cache_setup ccfg) {
  auto& st = self->state;
  st.io = std::move(io);
  st.req_env = std::move(req_env);
  st.seeder.seed(seed);
  st.picker.seed(seed ^ 0x9e3779b97f4a7c15ULL);
  st.metrics_cfg = std::move(mcfg);
  st.metrics
      = spawn_metrics_actor(self->system(), st.metrics_cfg.enabled,
                            st.metrics_cfg.names, st.metrics_cfg.on_record);
  self->monitor(st.metrics);
  st.children->push_back(caf::actor_cast<caf::actor>(st.metrics));
  st.cache_cfg = std::move(ccfg);
  if (st.cache_cfg.store) {
    st.disk = std::make_shared<cache_disk>();
    st.disk->actor = self->spawn<caf::detached + caf::monitored>(
        disk_fn, st.cache_cfg.store, st.cache_cfg.cfg.ttl);
    st.children->push_back(caf::actor_cast<caf::actor>(st.disk->actor));
  }
  if (st.cache_cfg.cfg.enabled)
    start_cache(self);
  update_request_env(self);
  for (auto& env : envs) {
    upstream_entry up;
    up.env = env;
    const auto& sup = env->cfg.supervision;
    up.intensity = restart_intensity{sup.max_restarts, sup.within};
    st.upstreams.emplace_back(std::move(up));
    spawn_pool(self, st.upstreams.size() - 1);
  }
  // When the service ends, its children end with it: pools answer what they
  // hold (`cancelled`) and stop their connections and breaker; live request
  // actors get an exit message and answer `cancelled`. Filled vectors not
  // written yet go to the disk actor first, so a run that ends keeps
  // everything it embedded (its exit message queues behind them).
  self->attach_functor([kids = st.children, reqs = st.requests,
                        disk = st.disk](const caf::error&) {
    if (disk && disk->actor && !disk->keys.empty())
      caf::anon_send(disk->actor, disk_put_atom_v, std::move(disk->keys),
                     std::move(disk->vecs));
    for (auto& w : *reqs)
      if (auto r = w.lock())
        caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
    for (auto& k : *kids)
      caf::anon_send_exit(k, caf::exit_reason::user_shutdown);
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    on_down(self, dm);
  });
  return {
      [self](embed_atom, embed_request& req) {
        return on_embed(self, req);
      },
      [self](request_done_atom) {
        on_request_done(self);
      },
      [self](request_done_atom, cache_settle& s) {
        // The fills' entries asked for first: freeing the worker overlaps
        // their memory reads.
        if (auto& c = self->state.cache)
          c->prefetch(s);
        on_request_done(self);
        on_cache_settle(self, s);
      },
      [self](cache_fill_atom, cache_settle& s) {
        on_cache_settle(self, s);
      },
      [self](metrics_atom) -> caf::result<metrics_snapshot> {
        auto& st = self->state;
        if (st.cache)
          return on_metrics_with_cache(self);
        return self->delegate(st.metrics, metrics_atom_v, live_pools(self),
                              st.accepted);
      },
      [self](health_atom) {
        return on_health(self);
      },
      [self](status_atom) {
        return on_status(self);
      },
      [](hello_atom, const std::string& theirs) {
        return answer_hello(theirs);
      },
      [self](restart_atom, uint32_t idx, uint64_t epoch) {
        on_restart_pool(self, idx, epoch);
      },
      [self](avail_atom, bool available) {
        on_availability(self, available);
      },
  };
}

/// The environment of one upstream's connection actors: where to connect,
/// TLS, the request target and the only copy of the API key.
caf::expected<std::shared_ptr<const detail::connection_env>>
make_connection_env(const upstream_config& up, const base_url& url,
                    std::shared_ptr<io_runtime> io,
                    const service_hooks& hooks) {
  auto cenv = std::make_shared<detail::connection_env>();
  cenv->io = std::move(io);
  cenv->transport.host = url.host;
  cenv->transport.port = url.port;
  cenv->transport.max_body_bytes = up.max_response_bytes;
  if (url.tls) {
    std::string err;
    detail::tls_options topts;
    topts.verify = up.tls_verify;
    topts.ca_file = up.ca_file;
    cenv->transport.tls = detail::make_tls_config(topts, err);
    if (!cenv->transport.tls)
      return make_error(errc::tls_failed, "upstream " + up.name + ": " + err);
  }
  endpoint_config ep;
  ep.url = url;
  ep.provider = up.provider;
  ep.azure_api_version = up.azure_api_version;
  cenv->target = embeddings_target(ep);
  cenv->auth = auth_header(up.provider, up.api_key);
  cenv->upstream_name = up.name;
  cenv->base64 = up.base64;
  cenv->crash_marker = hooks.crash_marker;
  return std::shared_ptr<const detail::connection_env>{std::move(cenv)};
}

/// The environment of one upstream's breaker actor.
std::shared_ptr<const detail::breaker_env>
make_breaker_env(const upstream_config& up, uint64_t seed,
                 const service_hooks& hooks) {
  auto benv = std::make_shared<detail::breaker_env>();
  benv->upstream = up.name;
  benv->cfg = up.breaker;
  benv->seed = seed;
  // Every transition is passed to the hook (the pool counts it).
  if (auto cb = hooks.on_breaker_transition)
    benv->on_transition = [cb](const std::string& upstream,
                               const detail::breaker_transition& t) {
      cb(upstream, t.from, t.to);
    };
  return benv;
}

/// The environment of one upstream's pool (without the API key: only the
/// connection environment keeps the secret).
std::shared_ptr<const detail::pool_env>
make_pool_env(const upstream_config& up, const retry_config& retry,
              std::shared_ptr<const detail::connection_env> cenv,
              uint64_t breaker_seed, const service_hooks& hooks) {
  auto penv = std::make_shared<detail::pool_env>();
  penv->cfg = up;
  penv->cfg.api_key.clear();
  penv->profile = profile_for(up.provider);
  if (up.max_inputs_per_request > 0)
    penv->profile.max_request_inputs = up.max_inputs_per_request;
  if (!hooks.pool_crash_marker.empty())
    penv->crash_marker = hooks.pool_crash_marker + up.name;
  penv->conn_env = std::move(cenv);
  penv->retry = retry;
  penv->batching = up.batching;
  if (up.breaker.enabled)
    penv->breaker = make_breaker_env(up, breaker_seed, hooks);
  if (hooks.on_connection_spawned) {
    auto cb = hooks.on_connection_spawned;
    auto name = up.name;
    penv->on_connection_spawned = [cb, name](const connection_actor& hdl) {
      cb(name, caf::actor_cast<caf::actor>(hdl));
    };
  }
  return penv;
}

} // namespace

caf::expected<service_actor>
spawn_service(caf::actor_system& sys, runtime_config cfg, service_hooks hooks) {
  if (cfg.upstreams.empty())
    return make_error(errc::invalid_input, "no upstream configured");
  if (cfg.retry.max_attempts < 1)
    return make_error(errc::invalid_input, "retry.max_attempts must be >= 1");
  auto io = hooks.io ? hooks.io : io_runtime_of(sys);
  if (!io)
    io = std::make_shared<io_runtime>(std::max<std::size_t>(1, cfg.io_threads));
  // The metrics actor knows the upstreams by name from the start.
  std::vector<std::string> names;
  for (auto& up : cfg.upstreams) {
    if (up.name.empty())
      if (auto url = parse_base_url(up.base_url))
        up.name = url->host + ":" + std::to_string(url->port);
    names.push_back(up.name);
  }
  metrics_setup mcfg{cfg.metrics, names, hooks.on_request_recorded};
  std::vector<std::shared_ptr<const detail::pool_env>> envs;
  for (auto& up : cfg.upstreams) {
    auto url = parse_base_url(up.base_url);
    if (!url)
      return url.error();
    if (up.connections < 1)
      return make_error(errc::invalid_input,
                        "upstream " + up.base_url
                            + ": connections must be >= 1");
    auto cenv = make_connection_env(up, *url, io, hooks);
    if (!cenv)
      return cenv.error();
    auto breaker_seed
        = (cfg.seed != 0 ? cfg.seed : std::random_device{}()) + envs.size();
    envs.emplace_back(
        make_pool_env(up, cfg.retry, std::move(*cenv), breaker_seed, hooks));
  }
  auto renv = std::make_shared<detail::request_env>();
  renv->retry = cfg.retry;
  renv->default_timeout = cfg.default_timeout;
  renv->crash_marker = hooks.request_crash_marker;
  auto seed = cfg.seed != 0 ? cfg.seed : std::random_device{}();
  cache_setup ccfg{cfg.cache, nullptr, hooks.cache_crash_marker};
  if (ccfg.cfg.enabled && ccfg.cfg.max_bytes == 0)
    return make_error(errc::invalid_input, "cache.max_bytes must be > 0");
  if (ccfg.cfg.enabled && !ccfg.cfg.path.empty()) {
    std::string err;
    ccfg.store = detail::persistent_store::open(ccfg.cfg.path,
                                                ccfg.cfg.disk_max_bytes, err);
    if (!ccfg.store)
      return make_error(errc::invalid_input, err);
  }
  return caf::actor_cast<service_actor>(
      sys.spawn(service_fn, std::move(io), std::move(renv), std::move(envs),
                seed, std::move(mcfg), std::move(ccfg)));
}

} // namespace embedrt
