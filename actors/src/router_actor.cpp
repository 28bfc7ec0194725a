// The router: a service_actor over a local service and remote nodes
// (embedrt/distributed.hpp; docs/distributed.md has the semantics).
//
// Members are the local service (optional) and one entry per peer. The
// router connects to each peer through the middleman actor (asynchronously:
// connect, then the `hello` handshake), monitors it, polls every member's
// `status` (capacity, models, readiness) and keeps one breaker actor per
// peer. Each caller request is one `pending` entry that owns the caller's
// promise until exactly one reply; it is forwarded to one member at a time
// with the time left as its budget, and re-routed to a member not tried yet
// when its member is lost or answers that it cannot serve it.
#include "breaker.hpp"
#include "distributed_detail.hpp"
#include "embedrt/log.hpp"
#include "embedrt/policies.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "interfaces.hpp"
#include "metrics_actor.hpp"

#include <algorithm>
#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/send.hpp>
#include <caf/spawn_options.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>
#include <optional>
#include <random>
#include <unordered_map>

namespace embedrt {

namespace detail {

namespace {

using clock_point = caf::actor_clock::time_point;

enum class link_state { connecting, up, down };

const char* to_string(link_state s) {
  switch (s) {
    case link_state::connecting: return "connecting";
    case link_state::up: return "up";
    default: return "down";
  }
}

/// One member: the local service or a peer.
struct member {
  std::string name;
  bool local = false;
  peer_address addr;
  /// Null while not connected.
  service_actor hdl;
  link_state link = link_state::connecting;
  /// Changes with every connect and loss: stale timers and answers of an
  /// earlier connection are ignored.
  uint64_t epoch = 0;
  /// Failed connects in a row (reconnect backoff exponent).
  uint32_t connect_failures = 0;
  /// The last status and whether it is current (answered the last poll).
  std::optional<node_status> status;
  bool status_ok = false;
  bool status_pending = false;
  /// True once the member has answered (or failed) a first status poll or
  /// connect: requests no longer wait for it.
  bool settled = false;
  int64_t outstanding = 0;
  int64_t served = 0;
  /// The breaker of a peer (none for the local member).
  breaker_actor breaker;
  breaker_view view;
  clock_point open_until{};
  uint32_t permits = 0;
  std::string last_error;
};

/// A caller's request until its one reply.
struct pending {
  caf::typed_response_promise<embed_result> rp;
  embed_request req;
  clock_point arrived;
  clock_point deadline;
  /// The member it is in flight at (npos: parked, waiting for a member).
  std::size_t at = npos;
  /// Generation of the current forward: an answer tagged with an earlier one
  /// is stale (bumped by each forward and when the member is lost).
  uint32_t attempt = 0;
  /// Forwards so far (the retries recorded are forwards - 1).
  uint32_t forwards = 0;
  uint64_t breaker_epoch = 0;
  bool probe = false;
  /// A parked request's expiry timer is armed.
  bool expiry_armed = false;
  std::vector<bool> tried;
  caf::error last_error;
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
};

struct router_state {
  static inline const char* name = "embedrt.router";

  ~router_state() {
    // Every request still held is answered, however the router ends.
    for (auto& kv : requests)
      kv.second.rp.deliver(make_error(errc::cancelled, "the router stopped"));
  }

  router_config cfg;
  std::vector<member> members;
  std::unordered_map<uint64_t, pending> requests;
  uint64_t next_id = 0;
  int64_t accepted = 0;
  std::mt19937_64 rng;
  metrics_actor metrics;
  std::vector<caf::typed_response_promise<health_report>> held_health;
};

using router_ptr = router_impl::stateful_pointer<router_state>;

int64_t ms_left(router_ptr self, clock_point until) {
  auto left = until - self->clock().now();
  return std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(left).count());
}

// -- members ------------------------------------------------------------------

bool serves(const node_status& s, const std::string& model) {
  return s.all_models
      || std::find(s.models.begin(), s.models.end(), model) != s.models.end();
}

bool breaker_lets_through(const member& m) {
  if (!m.breaker)
    return true;
  switch (m.view.state) {
    case breaker_state::closed: return true;
    case breaker_state::half_open: return m.permits > 0;
    default:
      return false; // Open: the breaker's timer sends the half-open view.
  }
}

bool eligible(const member& m, const std::string& model) {
  return m.hdl && m.link == link_state::up && m.status_ok && m.status
      && m.status->ready && serves(*m.status, model) && breaker_lets_through(m);
}

/// Load per advertised connection (lower is better).
double load_of(const member& m) {
  auto cap = std::max<int32_t>(1, m.status ? m.status->connections : 1);
  return static_cast<double>(m.outstanding + 1) / cap;
}

/// Power of two choices among the eligible members not tried yet.
std::optional<std::size_t> choose(router_ptr self, const pending& p) {
  auto& st = self->state;
  std::vector<std::size_t> cands;
  for (std::size_t i = 0; i < st.members.size(); ++i)
    if (!p.tried[i] && eligible(st.members[i], p.req.model))
      cands.push_back(i);
  if (cands.empty())
    return std::nullopt;
  if (cands.size() == 1)
    return cands[0];
  std::uniform_int_distribution<std::size_t> pick{0, cands.size() - 1};
  auto a = cands[pick(st.rng)];
  auto b = cands[pick(st.rng)];
  while (b == a)
    b = cands[pick(st.rng)];
  auto la = load_of(st.members[a]);
  auto lb = load_of(st.members[b]);
  return lb < la ? b : a;
}

/// True while a member that has not been heard from yet may still come up
/// (requests wait for it rather than fail at start-up).
bool settling(router_ptr self) {
  for (auto& m : self->state.members)
    if (!m.settled)
      return true;
  return false;
}

// -- replies ------------------------------------------------------------------

void finish(router_ptr self, uint64_t id, pending& p, caf::error err,
            std::optional<embed_result> res) {
  auto& st = self->state;
  auto upstream = p.at != pending::npos ? st.members[p.at].name : std::string{};
  record_request(self, st.metrics, upstream, p.req.model,
                 res ? caf::error{} : err,
                 p.req.inputs.size() + p.req.token_inputs.size(), p.arrived,
                 p.forwards > 0 ? p.forwards - 1 : 0);
  if (res)
    p.rp.deliver(std::move(*res));
  else
    p.rp.deliver(std::move(err));
  st.requests.erase(id);
}

/// The error when no member can take a request: the model is served by
/// nobody, or nobody is left.
caf::error no_member_error(router_ptr self, const pending& p) {
  auto& st = self->state;
  bool anyone_serves = false;
  bool all_known = true;
  std::string why;
  int64_t retry_ms = 0;
  for (auto& m : st.members) {
    if (!m.status)
      all_known = false;
    else if (serves(*m.status, p.req.model))
      anyone_serves = true;
    if (!why.empty())
      why += ", ";
    why += m.name + ": ";
    if (m.link != link_state::up)
      why += to_string(m.link);
    else if (!m.status_ok)
      why += "no status";
    else if (!m.status->ready)
      why += "not ready";
    else if (!serves(*m.status, p.req.model))
      why += "does not serve the model";
    else if (m.breaker && m.view.state == breaker_state::open) {
      why += "breaker open";
      auto left = ms_left(self, m.open_until);
      retry_ms = retry_ms == 0 ? left : std::min(retry_ms, left);
    } else
      why += "tried";
  }
  if (all_known && !anyone_serves && !st.members.empty())
    return make_error(errc::invalid_input,
                      "no node serves model '" + p.req.model + "'", 404);
  if (p.last_error && error_code(p.last_error) != errc::none
      && error_code(p.last_error) != errc::cancelled
      && error_code(p.last_error) != errc::node_down)
    return p.last_error;
  return make_error(errc::node_down,
                    "no node left for model '" + p.req.model + "' (" + why
                        + ")",
                    0, std::chrono::milliseconds{retry_ms});
}

// -- breaker of a peer --------------------------------------------------------

void report(router_ptr self, member& m, uint64_t epoch, call_verdict v,
            const std::string& what) {
  if (!m.breaker)
    return;
  breaker_outcome out;
  out.epoch = epoch;
  out.verdict = v;
  out.what = what;
  self->send(m.breaker, outcome_atom_v, std::move(out));
}

std::shared_ptr<const breaker_env> peer_breaker_env(router_ptr self,
                                                    const member& m) {
  auto env = std::make_shared<breaker_env>();
  env->upstream = "node " + m.name;
  env->cfg = self->state.cfg.breaker;
  env->seed = self->state.rng();
  return env;
}

void spawn_breaker(router_ptr self, member& m,
                   std::optional<breaker_view> resume) {
  m.breaker
      = self->spawn<caf::monitored>(breaker_actor_fn, peer_breaker_env(self, m),
                                    self->address(), std::move(resume));
}

void on_breaker_view(router_ptr self, breaker_view& v) {
  auto& st = self->state;
  auto from = self->current_sender();
  for (auto& m : st.members) {
    if (!m.breaker || caf::actor_cast<caf::strong_actor_ptr>(m.breaker) != from)
      continue;
    if (v.epoch == m.view.epoch) {
      if (v.state == breaker_state::half_open)
        m.permits += v.permits;
    } else if (v.epoch > m.view.epoch) {
      m.view = std::move(v);
      m.open_until = m.view.state == breaker_state::open
          ? self->clock().now() + m.view.open_for
          : clock_point{};
      m.permits = m.view.state == breaker_state::half_open ? m.view.permits : 0;
    }
    return;
  }
}

// -- routing ------------------------------------------------------------------

void route(router_ptr self, uint64_t id);

void on_member_failure(router_ptr self, uint64_t id, pending& p, member& m,
                       caf::error err);

void forward(router_ptr self, uint64_t id, pending& p, std::size_t idx) {
  auto& st = self->state;
  auto& m = st.members[idx];
  p.at = idx;
  p.tried[idx] = true;
  ++p.attempt;
  ++p.forwards;
  ++m.outstanding;
  p.breaker_epoch = m.view.epoch;
  p.probe = m.breaker && m.view.state == breaker_state::half_open;
  if (p.probe)
    --m.permits;
  auto left = p.deadline - self->clock().now();
  embed_request fwd = p.req;
  fwd.timeout = std::max(caf::timespan{std::chrono::milliseconds{1}},
                         caf::timespan{left});
  auto attempt = p.attempt;
  self->request(m.hdl, fwd.timeout, embed_atom_v, std::move(fwd))
      .then(
          [self, id, attempt](embed_result& r) {
            auto& st = self->state;
            auto i = st.requests.find(id);
            if (i == st.requests.end() || i->second.attempt != attempt)
              return; // Re-routed meanwhile: a late answer.
            auto& p = i->second;
            auto& m = st.members[p.at];
            --m.outstanding;
            ++m.served;
            report(self, m, p.breaker_epoch, call_verdict::success, "");
            if (!m.local)
              r.upstream = m.name + "/" + r.upstream;
            finish(self, id, p, caf::error{}, std::move(r));
          },
          [self, id, attempt](caf::error& err) {
            auto& st = self->state;
            auto i = st.requests.find(id);
            if (i == st.requests.end() || i->second.attempt != attempt)
              return;
            auto& p = i->second;
            auto& m = st.members[p.at];
            --m.outstanding;
            on_member_failure(self, id, p, m, std::move(err));
          });
}

/// How a member's error counts: the member could not serve the request
/// (re-route it, a failure for its breaker), or it is the request's own
/// answer (deliver it).
enum class failure_kind { reroute, reroute_ignored, deliver };

failure_kind classify(const caf::error& err) {
  if (err.category() != error_category())
    return err == caf::sec::request_timeout ? failure_kind::deliver
                                            : failure_kind::reroute;
  switch (error_code(err)) {
    case errc::invalid_input:
    case errc::deadline_exceeded: return failure_kind::deliver;
    case errc::overloaded:
    case errc::rate_limited: return failure_kind::reroute_ignored;
    default: return failure_kind::reroute;
  }
}

void on_member_failure(router_ptr self, uint64_t id, pending& p, member& m,
                       caf::error err) {
  auto kind = classify(err);
  report(self, m, p.breaker_epoch,
         kind == failure_kind::reroute ? call_verdict::failure
                                       : call_verdict::ignored,
         self->system().render(err));
  if (err == caf::sec::request_timeout) {
    finish(self, id, p,
           make_error(errc::deadline_exceeded,
                      "no answer from node " + m.name + " within the deadline"),
           std::nullopt);
    return;
  }
  if (kind == failure_kind::deliver) {
    finish(self, id, p, std::move(err), std::nullopt);
    return;
  }
  if (err.category() != error_category())
    err = make_error(errc::node_down,
                     "node " + m.name + ": " + self->system().render(err));
  log(log_level::debug, "request_rerouted",
      {{"request_id", p.req.request_id},
       {"from", m.name},
       {"reason", error_detail(err)}});
  p.last_error = std::move(err);
  route(self, id);
}

void route(router_ptr self, uint64_t id) {
  auto& st = self->state;
  auto i = st.requests.find(id);
  if (i == st.requests.end())
    return;
  auto& p = i->second;
  if (self->clock().now() >= p.deadline) {
    finish(self, id, p,
           make_error(errc::deadline_exceeded,
                      "deadline passed before a node could take the request"),
           std::nullopt);
    return;
  }
  if (auto idx = choose(self, p)) {
    forward(self, id, p, *idx);
    return;
  }
  if (settling(self)) {
    // Start-up: a member not heard from yet may take it; wait for it, but
    // not past the deadline.
    p.at = pending::npos;
    if (!p.expiry_armed) {
      p.expiry_armed = true;
      self->delayed_send(self, p.deadline - self->clock().now(), expire_atom_v,
                         id);
    }
    return;
  }
  finish(self, id, p, no_member_error(self, p), std::nullopt);
}

/// Routes the requests waiting for a member (after a member changed).
void route_parked(router_ptr self) {
  auto& st = self->state;
  std::vector<uint64_t> parked;
  for (auto& kv : st.requests)
    if (kv.second.at == pending::npos)
      parked.push_back(kv.first);
  for (auto id : parked)
    route(self, id);
}

caf::result<embed_result> on_embed(router_ptr self, embed_request& req) {
  auto& st = self->state;
  ++st.accepted;
  auto id = ++st.next_id;
  if (req.request_id.empty())
    req.request_id = "req-" + std::to_string(id);
  pending p;
  p.rp = self->make_response_promise<embed_result>();
  p.arrived = self->clock().now();
  auto budget = req.timeout.count() > 0 ? req.timeout
                                        : caf::timespan{st.cfg.default_timeout};
  p.deadline = p.arrived + budget;
  p.req = std::move(req);
  p.tried.assign(st.members.size(), false);
  auto rp = p.rp;
  st.requests.emplace(id, std::move(p));
  route(self, id);
  return rp;
}

// -- connections --------------------------------------------------------------

void schedule_reconnect(router_ptr self, std::size_t idx) {
  auto& m = self->state.members[idx];
  auto& cfg = self->state.cfg;
  auto wait = doubling_backoff(cfg.reconnect_backoff, cfg.reconnect_backoff_cap,
                               m.connect_failures);
  self->delayed_send(self, wait, reconnect_atom_v, static_cast<uint32_t>(idx),
                     m.epoch);
}

void poll_status(router_ptr self, std::size_t idx);

void connect_failed(router_ptr self, std::size_t idx, uint64_t epoch,
                    const caf::error& err) {
  auto& m = self->state.members[idx];
  if (m.epoch != epoch)
    return;
  m.link = link_state::down;
  m.settled = true;
  m.last_error = error_detail(err);
  if (m.connect_failures++ == 0)
    log(log_level::warn, "peer_unreachable",
        {{"peer", m.name}, {"reason", m.last_error}});
  ++m.epoch;
  schedule_reconnect(self, idx);
  route_parked(self);
}

void peer_connected(router_ptr self, std::size_t idx, uint64_t epoch,
                    caf::strong_actor_ptr remote) {
  auto& m = self->state.members[idx];
  if (m.epoch != epoch)
    return;
  m.hdl = caf::actor_cast<service_actor>(std::move(remote));
  m.link = link_state::up;
  m.connect_failures = 0;
  self->monitor(m.hdl);
  log(log_level::info, "peer_up", {{"peer", m.name}});
  poll_status(self, idx);
}

/// Connects to a peer: the middleman's connect, then the wire handshake.
void connect_peer(router_ptr self, std::size_t idx) {
  auto& st = self->state;
  auto& m = st.members[idx];
  m.link = link_state::connecting;
  auto epoch = m.epoch;
  auto addr = m.addr;
  self->request(node_connector(self->system()), st.cfg.connect_timeout,
                caf::connect_atom::value, addr.host, addr.port)
      .then(
          [self, idx, epoch, addr](caf::node_id&, caf::strong_actor_ptr& ptr,
                                   std::set<std::string>& ifs) {
            if (!ptr) {
              connect_failed(
                  self, idx, epoch,
                  make_error(errc::node_down, "nothing published there"));
              return;
            }
            auto peer = caf::actor_cast<caf::actor>(ptr);
            self->request(peer, self->state.cfg.connect_timeout, hello_atom_v,
                          wire_fingerprint())
                .then(
                    [self, idx, epoch, addr, ptr,
                     ifs](std::string& theirs) mutable {
                      caf::error err;
                      if (theirs != wire_fingerprint())
                        err = make_error(errc::invalid_input,
                                         "wire mismatch: peer speaks '" + theirs
                                             + "', this node '"
                                             + wire_fingerprint() + "'");
                      else
                        err = check_interface(self->system(), addr, ifs);
                      if (err)
                        connect_failed(self, idx, epoch, err);
                      else
                        peer_connected(self, idx, epoch, std::move(ptr));
                    },
                    [self, idx, epoch, addr](caf::error& err) {
                      connect_failed(self, idx, epoch,
                                     hello_failed(addr, err, self->system()));
                    });
          },
          [self, idx, epoch, addr](caf::error& err) {
            connect_failed(self, idx, epoch,
                           detail::connect_failed(self->system(), addr, err));
          });
}

/// A member's actor or node is gone: its requests go elsewhere now.
void on_member_down(router_ptr self, std::size_t idx, const caf::error& why) {
  auto& st = self->state;
  auto& m = st.members[idx];
  m.hdl = nullptr;
  m.link = link_state::down;
  m.status_ok = false;
  m.status_pending = false;
  m.settled = true;
  m.last_error = self->system().render(why);
  ++m.epoch;
  log(log_level::warn, "peer_down",
      {{"peer", m.name}, {"reason", m.last_error}});
  std::vector<uint64_t> lost;
  for (auto& kv : st.requests)
    if (kv.second.at == idx)
      lost.push_back(kv.first);
  for (auto id : lost) {
    auto& p = st.requests[id];
    --m.outstanding;
    report(self, m, p.breaker_epoch, call_verdict::failure, "node lost");
    p.last_error = make_error(errc::node_down,
                              "node " + m.name + " lost: " + m.last_error);
    p.at = pending::npos;
    ++p.attempt; // Whatever the lost node might still say is stale.
    route(self, id);
  }
  if (!m.local)
    schedule_reconnect(self, idx);
}

void on_down(router_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  for (std::size_t i = 0; i < st.members.size(); ++i) {
    auto& m = st.members[i];
    if (m.hdl && m.hdl.address() == dm.source) {
      on_member_down(self, i, dm.reason);
      return;
    }
    if (m.breaker && m.breaker.address() == dm.source) {
      // The breaker died (a bug): a new one resumes from the last view.
      breaker_view v = m.view;
      if (v.state == breaker_state::open)
        v.open_for
            = std::max(caf::timespan{0},
                       caf::timespan{m.open_until - self->clock().now()});
      spawn_breaker(self, m, std::move(v));
      return;
    }
  }
}

// -- status -------------------------------------------------------------------

void poll_status(router_ptr self, std::size_t idx) {
  auto& m = self->state.members[idx];
  if (!m.hdl || m.status_pending)
    return;
  m.status_pending = true;
  auto epoch = m.epoch;
  self->request(m.hdl, self->state.cfg.status_interval, status_atom_v)
      .then(
          [self, idx, epoch](node_status& s) {
            auto& m = self->state.members[idx];
            if (m.epoch != epoch)
              return;
            m.status_pending = false;
            m.status = std::move(s);
            m.status_ok = true;
            m.settled = true;
            route_parked(self);
          },
          [self, idx, epoch](caf::error& err) {
            auto& m = self->state.members[idx];
            if (m.epoch != epoch)
              return;
            m.status_pending = false;
            m.status_ok = false;
            m.settled = true;
            m.last_error = "status: " + self->system().render(err);
            route_parked(self);
          });
}

void on_tick(router_ptr self) {
  auto& st = self->state;
  for (std::size_t i = 0; i < st.members.size(); ++i)
    poll_status(self, i);
  self->delayed_send(self, st.cfg.status_interval, tick_atom_v);
}

// -- health and status of the router
// --------------------------------------------

std::string member_state(const member& m) {
  if (m.link != link_state::up)
    return to_string(m.link);
  if (!m.status_ok)
    return "unresponsive";
  if (!m.status->ready)
    return "not_ready";
  if (m.breaker && m.view.state == breaker_state::open)
    return "breaker_open";
  if (m.breaker && m.view.state == breaker_state::half_open)
    return "half_open";
  return "up";
}

node_status router_status(router_ptr self) {
  auto& st = self->state;
  node_status s;
  s.wire = wire_fingerprint();
  s.in_flight = static_cast<int64_t>(st.requests.size());
  for (auto& m : st.members) {
    upstream_health h;
    h.name = m.name;
    h.base_url = m.local ? "local" : "caf://" + m.name;
    h.state = member_state(m);
    if (m.status && m.status_ok && m.link == link_state::up) {
      h.connections = m.status->connections;
      h.idle_connections = m.status->idle_connections;
      h.queued_requests = m.status->queued;
    }
    h.upstream_calls = m.served;
    bool usable = h.state == "up" || h.state == "half_open";
    if (usable) {
      s.ready = true;
      s.connections += h.connections;
      s.idle_connections += h.idle_connections;
      s.queued += h.queued_requests;
    }
    if (m.status && m.status_ok) {
      s.all_models = s.all_models || m.status->all_models;
      for (auto& model : m.status->models)
        if (std::find(s.models.begin(), s.models.end(), model)
            == s.models.end())
          s.models.push_back(model);
    }
    s.upstreams.push_back(std::move(h));
  }
  return s;
}

router_impl::behavior_type router_fn(router_ptr self, service_actor local,
                                     router_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.rng.seed(st.cfg.seed != 0 ? st.cfg.seed : std::random_device{}());
  std::vector<std::string> names;
  if (local) {
    member m;
    m.name = "local";
    m.local = true;
    m.hdl = std::move(local);
    m.link = link_state::up;
    self->monitor(m.hdl);
    st.members.push_back(std::move(m));
  }
  for (auto& addr : st.cfg.peers) {
    member m;
    m.addr = addr;
    m.name = addr.host + ":" + std::to_string(addr.port);
    st.members.push_back(std::move(m));
  }
  for (auto& m : st.members) {
    names.push_back(m.name);
    if (!m.local && st.cfg.breaker.enabled)
      spawn_breaker(self, m, std::nullopt);
  }
  st.metrics = spawn_metrics_actor(self->system(), st.cfg.metrics, names);
  auto kids = std::make_shared<std::vector<caf::actor>>();
  kids->push_back(caf::actor_cast<caf::actor>(st.metrics));
  for (auto& m : st.members)
    if (m.breaker)
      kids->push_back(caf::actor_cast<caf::actor>(m.breaker));
  self->attach_functor([kids](const caf::error&) {
    for (auto& k : *kids)
      caf::anon_send_exit(k, caf::exit_reason::user_shutdown);
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    on_down(self, dm);
  });
  for (std::size_t i = 0; i < st.members.size(); ++i)
    if (st.members[i].local)
      poll_status(self, i);
    else
      connect_peer(self, i);
  self->delayed_send(self, st.cfg.status_interval, tick_atom_v);
  return {
      [self](embed_atom, embed_request& req) {
        return on_embed(self, req);
      },
      [self](health_atom) -> health_report {
        auto s = router_status(self);
        health_report r;
        r.ready = s.ready;
        r.upstreams = std::move(s.upstreams);
        return r;
      },
      [self](status_atom) -> node_status {
        return router_status(self);
      },
      [self](metrics_atom) -> caf::delegated<metrics_snapshot> {
        auto& st = self->state;
        return self->delegate(st.metrics, metrics_atom_v,
                              std::vector<pool_actor>{}, st.accepted);
      },
      [](hello_atom, const std::string& theirs) {
        return answer_hello(theirs);
      },
      [self](breaker_atom, breaker_view& v) {
        on_breaker_view(self, v);
      },
      [self](tick_atom) {
        on_tick(self);
      },
      [self](reconnect_atom, uint32_t idx, uint64_t epoch) {
        auto& st = self->state;
        if (idx < st.members.size() && st.members[idx].epoch == epoch
            && !st.members[idx].hdl)
          connect_peer(self, idx);
      },
      [self](expire_atom, uint64_t id) {
        auto& st = self->state;
        auto i = st.requests.find(id);
        if (i != st.requests.end() && i->second.at == pending::npos)
          route(self, id);
      },
  };
}

} // namespace

} // namespace detail

caf::expected<service_actor>
spawn_router(caf::actor_system& sys, service_actor local, router_config cfg) {
  if (!local && cfg.peers.empty())
    return make_error(errc::invalid_input,
                      "a router needs a local service or at least one peer");
  if (!cfg.peers.empty() && !sys.has_middleman())
    return make_error(errc::invalid_input,
                      "a router with peers needs the middleman "
                      "(call embedrt::enable_distribution(cfg) first)");
  if (cfg.status_interval.count() <= 0 || cfg.connect_timeout.count() <= 0
      || cfg.reconnect_backoff.count() <= 0)
    return make_error(errc::invalid_input,
                      "router: status_interval, connect_timeout and "
                      "reconnect_backoff must be > 0");
  return caf::actor_cast<service_actor>(
      sys.spawn(detail::router_fn, std::move(local), std::move(cfg)));
}

} // namespace embedrt
