// Deterministic tests of the router across simulated CAF nodes: CAF's own
// simulated network (caf/test/io_dsl.hpp: belt_fixture, three nodes on the
// test multiplexer and test_coordinator; no sockets, no threads, virtual
// time). Earth runs the router; mars and jupiter publish scripted services
// whose capacity, readiness and models the tests set and whose replies they
// can hold back (requests in flight).
#define CAF_TEST_NO_MAIN
// GCC 12 with -fsanitize=address,undefined reports a false
// -Wmaybe-uninitialized inside libstdc++'s std::regex, which CAF's test
// engine (caf/test/unit_test_impl.hpp, needed by io_dsl.hpp) instantiates.
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "embedrt/distributed.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/test/io_dsl.hpp>
#include <caf/test/unit_test_impl.hpp>
#include <catch2/catch.hpp>
#include <map>
#include <memory>

using namespace embedrt;
using namespace std::chrono_literals;

namespace {

struct node_config : caf::actor_system_config {
  node_config() {
    load<caf::io::middleman>();
    register_types(*this);
    // The middleman actor runs on the test coordinator (not detached), so
    // publish and connect run inside the simulation.
    set("middleman.attach-utility-actors", true);
  }
};

using planet = test_node_fixture<test_coordinator_fixture<node_config>>;

/// What a scripted node advertises and does; shared with the test (the
/// simulation runs on the test's thread).
struct script {
  std::string name;
  bool ready = true;
  bool all_models = true;
  std::vector<std::string> models;
  int32_t connections = 8;
  /// Hold replies back until `release`.
  bool hold = false;
  /// Answer `hello` with this instead of our fingerprint (version guard).
  std::string hello_answer;
  std::vector<caf::typed_response_promise<embed_result>> held;
  std::vector<embed_request> held_requests;
  int received = 0;
  /// The budget each request arrived with.
  std::vector<caf::timespan> budgets;
};

using script_ptr = std::shared_ptr<script>;

embed_result answer(const script& s, const embed_request& req) {
  embed_result r;
  r.model = req.model;
  r.upstream = s.name;
  r.request_id = req.request_id;
  for (std::size_t i = 0; i < req.inputs.size(); ++i)
    r.embeddings.push_back({static_cast<float>(req.inputs[i].size()), 1.0f});
  return r;
}

service_actor::behavior_type scripted_node(service_actor::pointer self,
                                           script_ptr s) {
  return {
      [self, s](embed_atom, embed_request& req) -> caf::result<embed_result> {
        ++s->received;
        s->budgets.push_back(req.timeout);
        if (!s->hold)
          return answer(*s, req);
        auto rp = self->make_response_promise<embed_result>();
        s->held.push_back(rp);
        s->held_requests.push_back(std::move(req));
        return rp;
      },
      [s](health_atom) {
        health_report h;
        h.ready = s->ready;
        return h;
      },
      [](metrics_atom) {
        return metrics_snapshot{};
      },
      [s](status_atom) {
        node_status st;
        st.wire = wire_fingerprint();
        st.ready = s->ready;
        st.all_models = s->all_models;
        st.models = s->models;
        st.connections = s->connections;
        st.idle_connections = s->connections;
        return st;
      },
      [s](hello_atom, const std::string&) -> caf::result<std::string> {
        return s->hello_answer.empty() ? wire_fingerprint() : s->hello_answer;
      },
  };
}

void release(script& s) {
  s.hold = false;
  for (std::size_t i = 0; i < s.held.size(); ++i)
    s.held[i].deliver(answer(s, s.held_requests[i]));
  s.held.clear();
  s.held_requests.clear();
}

/// Replies a caller got, by the node that served them.
struct ledger {
  int answered = 0;
  std::map<std::string, int> ok_by_node;
  std::vector<caf::error> errors;
};

using ledger_ptr = std::shared_ptr<ledger>;

struct cluster : belt_fixture<test_coordinator_fixture<node_config>> {
  script_ptr mars_script = std::make_shared<script>();
  script_ptr jupiter_script = std::make_shared<script>();
  service_actor mars_node;
  service_actor jupiter_node;
  service_actor router;

  cluster() {
    mars_script->name = "m";
    jupiter_script->name = "j";
    mars_node = publish_on(mars, mars_script, "mars", 8001);
    jupiter_node = publish_on(jupiter, jupiter_script, "jupiter", 8002);
  }

  ~cluster() {
    // The router polls forever: stop it before the fixture runs out the
    // remaining timers.
    if (router)
      caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
    for (auto* s : {mars_script.get(), jupiter_script.get()})
      release(*s);
    settle();
    // Each actor system waits for its actors when it is destroyed.
    for (auto& n : {mars_node, jupiter_node})
      caf::anon_send_exit(n, caf::exit_reason::user_shutdown);
    settle();
  }

  service_actor publish_on(planet& p, script_ptr s, const std::string& host,
                           uint16_t port) {
    prepare_connection(p, earth, host, port);
    auto hdl = p.sys.spawn(scripted_node, std::move(s));
    publish(p, hdl, port);
    return hdl;
  }

  /// The fixture's own publish() asserts with CAF's test macros, which need
  /// CAF's test engine; this suite runs under Catch2.
  void publish(planet& p, service_actor hdl, uint16_t port) {
    // publish() runs the middleman actor inline on its next enqueue: nothing
    // else may be scheduled before it.
    settle();
    p.sched.inline_next_enqueue();
    auto res = p.mm.publish(hdl, port, nullptr, true);
    REQUIRE(res);
    REQUIRE(*res == port);
  }

  /// Runs messages and network traffic on every node until nothing moves;
  /// no timer fires (the router's status poll would never let it end).
  void settle() {
    // Runnables (the BASP broker) before reading: read_data() runs pending
    // runnables itself without reporting it, which could leave their output
    // unread on another node when this pass ends.
    auto step = [](planet& p) {
      return p.sched.try_run_once() || p.mpx.try_exec_runnable()
          || p.mpx.read_data() || p.mpx.try_accept_connection();
    };
    while (step(earth) || step(mars) || step(jupiter))
      ; // repeat
  }

  /// Moves every node's clock by `d` (timers due fire), then settles.
  void advance(caf::timespan d) {
    for (auto* p : {&earth, &mars, &jupiter})
      p->sched.clock().advance_time(d);
    settle();
  }

  void start_router(router_config cfg = {}) {
    cfg.peers = {{"mars", 8001}, {"jupiter", 8002}};
    cfg.seed = 42;
    cfg.status_interval = 250ms;
    auto r = spawn_router(earth.sys, service_actor{}, cfg);
    REQUIRE(r);
    router = *r;
    settle();
  }

  /// `n` requests from a caller on earth, each with `budget`.
  ledger_ptr send(int n, const std::string& model = "m",
                  caf::timespan budget = caf::timespan{10s}) {
    auto out = std::make_shared<ledger>();
    // (What the actor needs is passed as spawn arguments: CAF 0.17.6 binds a
    // reference to a null pointer when it starts a function-based actor
    // spawned without any, which UBSan reports.)
    earth.sys.spawn(
        [=](caf::event_based_actor* self, service_actor r) {
          for (int i = 0; i < n; ++i) {
            embed_request req;
            req.model = model;
            req.inputs = {"text " + std::to_string(i)};
            req.timeout = budget;
            self->request(r, budget + caf::timespan{1s}, embed_atom_v, req)
                .then(
                    [out](embed_result& res) {
                      ++out->answered;
                      ++out->ok_by_node[res.upstream];
                    },
                    [out](caf::error& err) {
                      ++out->answered;
                      out->errors.push_back(err);
                    });
          }
        },
        router);
    settle();
    return out;
  }

  health_report health() {
    health_report out;
    earth.sys.spawn(
        [&](caf::event_based_actor* self, service_actor r) {
          self->request(r, 1s, health_atom_v).then([&](health_report& h) {
            out = std::move(h);
          });
        },
        router);
    settle();
    return out;
  }

  metrics_snapshot metrics() {
    metrics_snapshot out;
    earth.sys.spawn(
        [&](caf::event_based_actor* self, service_actor r) {
          self->request(r, 1s, metrics_atom_v).then([&](metrics_snapshot& m) {
            out = std::move(m);
          });
        },
        router);
    settle();
    return out;
  }

  std::string state_of(const std::string& name) {
    for (auto& u : health().upstreams)
      if (u.name == name)
        return u.state;
    return "absent";
  }
};

} // namespace

TEST_CASE_METHOD(cluster,
                 "router: requests spread by outstanding work per advertised "
                 "connection, and follow capacity updates",
                 "[distributed]") {
  mars_script->connections = 8;
  jupiter_script->connections = 24;
  start_router();
  CHECK(state_of("mars:8001") == "up");
  CHECK(state_of("jupiter:8002") == "up");
  mars_script->hold = true;
  jupiter_script->hold = true;
  auto out = send(64);
  // 64 in flight over 8 + 24 advertised connections: about 1 : 3.
  CHECK(mars_script->received >= 12);
  CHECK(mars_script->received <= 20);
  CHECK(mars_script->received + jupiter_script->received == 64);
  release(*mars_script);
  release(*jupiter_script);
  settle();
  CHECK(out->answered == 64);
  CHECK(out->errors.empty());
  CHECK(out->ok_by_node["mars:8001/m"] == mars_script->received);

  // Jupiter now advertises as many connections as mars: the next requests
  // split evenly once the router has polled the new status.
  jupiter_script->connections = 8;
  advance(250ms);
  mars_script->received = jupiter_script->received = 0;
  mars_script->hold = jupiter_script->hold = true;
  auto even = send(32);
  CHECK(mars_script->received == 16);
  CHECK(jupiter_script->received == 16);
}

TEST_CASE_METHOD(cluster,
                 "router: a node that is not ready or does not serve the model "
                 "is skipped, a model nobody serves is a 404",
                 "[distributed]") {
  start_router();
  mars_script->ready = false;
  advance(250ms);
  CHECK(state_of("mars:8001") == "not_ready");
  auto out = send(10);
  CHECK(out->ok_by_node["jupiter:8002/j"] == 10);
  CHECK(mars_script->received == 0);

  // Mars is ready again but serves only model "a"; jupiter serves all.
  mars_script->ready = true;
  mars_script->all_models = false;
  mars_script->models = {"a"};
  advance(250ms);
  auto b = send(10, "b");
  CHECK(b->ok_by_node["jupiter:8002/j"] == 10);
  CHECK(mars_script->received == 0);

  jupiter_script->all_models = false;
  jupiter_script->models = {"a"};
  advance(250ms);
  auto c = send(1, "c");
  REQUIRE(c->errors.size() == 1);
  CHECK(error_code(c->errors[0]) == errc::invalid_input);
  CHECK(error_http_status(c->errors[0]) == 404);
}

TEST_CASE_METHOD(cluster,
                 "router: requests in flight at a node that is lost go to "
                 "another node within their deadline, each answered once",
                 "[distributed]") {
  start_router();
  mars_script->hold = true;
  jupiter_script->hold = true;
  auto out = send(40, "m", caf::timespan{2s});
  auto at_mars = mars_script->received;
  REQUIRE(at_mars > 0);
  CHECK(out->answered == 0);
  // Half a second later mars is lost with its requests unanswered.
  advance(500ms);
  caf::anon_send_exit(mars_node, caf::exit_reason::kill);
  settle();
  CHECK(state_of("mars:8001") != "up");
  CHECK(jupiter_script->received == 40);
  // The re-routed requests carry the time they have left, not a new budget.
  auto rerouted = std::vector<caf::timespan>(
      jupiter_script->budgets.end() - at_mars, jupiter_script->budgets.end());
  for (auto b : rerouted)
    CHECK(b <= caf::timespan{1500ms});
  release(*jupiter_script);
  settle();
  CHECK(out->answered == 40);
  CHECK(out->errors.empty());
  CHECK(out->ok_by_node["jupiter:8002/j"] == 40);
  // Each re-routed request counts one retry, the others none.
  int64_t retries = 0;
  int64_t requests = 0;
  for (auto& c : metrics().requests) {
    retries += c.retries;
    requests += c.requests;
  }
  CHECK(requests == 40);
  CHECK(retries == at_mars);
}

TEST_CASE_METHOD(cluster,
                 "router: with no node left a request fails at once with "
                 "node_down, a node that comes back is used again",
                 "[distributed]") {
  start_router();
  caf::anon_send_exit(mars_node, caf::exit_reason::kill);
  caf::anon_send_exit(jupiter_node, caf::exit_reason::kill);
  settle();
  auto out = send(1);
  REQUIRE(out->errors.size() == 1);
  CHECK(error_code(out->errors[0]) == errc::node_down);
  // Mars publishes a new service on the same port; the router's reconnect
  // (backoff 100 ms, doubling) finds it and routes to it again.
  auto again = std::make_shared<script>();
  again->name = "m2";
  prepare_connection(mars, earth, "mars", 8001);
  mars_node = mars.sys.spawn(scripted_node, again);
  publish(mars, mars_node, 8001);
  for (int i = 0; i < 8 && state_of("mars:8001") != "up"; ++i)
    advance(250ms);
  CHECK(state_of("mars:8001") == "up");
  auto back = send(5);
  CHECK(back->ok_by_node["mars:8001/m2"] == 5);
}

TEST_CASE_METHOD(cluster,
                 "router: a node with another wire fingerprint is refused at "
                 "connect time and never gets a request",
                 "[distributed]") {
  mars_script->hello_answer
      = "embedrt-wire/1 offset=4100 types=20 hash=0000000000000000";
  start_router();
  CHECK(state_of("mars:8001") == "down");
  CHECK(state_of("jupiter:8002") == "up");
  auto out = send(10);
  CHECK(out->ok_by_node["jupiter:8002/j"] == 10);
  CHECK(mars_script->received == 0);
}
