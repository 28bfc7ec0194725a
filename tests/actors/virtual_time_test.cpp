// Deterministic tests of retry/backoff, deadlines, failover, the retry
// budget and supervision (restart backoff, restart intensity, down and probe),
// run on CAF's test_coordinator in virtual time: no sleeps, no sockets.
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "pool_actor.hpp"
#include "request_actor.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <memory>
#include <optional>
#include <stdexcept>

using namespace embedrt;
using namespace embedrt::detail;
using namespace std::chrono_literals;

namespace {

/// The few lines of CAF's test_coordinator_fixture that matter, for Catch2.
struct virtual_time {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::scheduler::test_coordinator* sched = nullptr;

  virtual_time() {
    register_types(cfg);
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.file-verbosity", caf::atom("quiet"));
    sys = std::make_unique<caf::actor_system>(cfg);
    sched = &dynamic_cast<caf::scheduler::test_coordinator&>(sys->scheduler());
    sched->clock().current_time += std::chrono::hours(1);
  }

  ~virtual_time() {
    // Request timeouts stay scheduled (holding their actor) until they fire,
    // even after the response arrived: fire them so every actor can end.
    sched->run();
    while (sched->trigger_timeout())
      sched->run();
  }

  caf::actor_clock::time_point now() const {
    return sched->clock().now();
  }
};

/// A scripted pool: answers each call with the next scripted result (or
/// holds the promise forever when the script says so) and records when and
/// how it was called.
struct pool_script {
  struct step {
    std::optional<call_result> answer; // nullopt: never answer
  };
  std::vector<step> steps;
  std::vector<caf::actor_clock::time_point> arrivals;
  std::vector<bool> retry_flags;
  std::vector<caf::typed_response_promise<call_result>> held;
};

call_result ok_result(std::size_t n, float value = 1.0f) {
  call_result r;
  r.model = "m";
  for (std::size_t i = 0; i < n; ++i)
    r.embeddings.push_back({value + static_cast<float>(i), 0.0f});
  r.usage.prompt_tokens = static_cast<int64_t>(n);
  r.usage.total_tokens = static_cast<int64_t>(n);
  return r;
}

call_result err_result(errc code, bool retryable, int64_t retry_after_ms = 0) {
  call_result r;
  r.error = make_error(code, "scripted failure", 0,
                       std::chrono::milliseconds{retry_after_ms});
  r.retryable = retryable;
  r.retry_after_ms = retry_after_ms;
  return r;
}

pool_actor::behavior_type scripted_pool(pool_actor::pointer self,
                                        std::shared_ptr<pool_script> script) {
  return {
      [self, script](call_atom,
                     upstream_call& call) -> caf::result<call_result> {
        auto i = script->arrivals.size();
        script->arrivals.push_back(self->clock().now());
        script->retry_flags.push_back(call.is_retry);
        if (i < script->steps.size() && script->steps[i].answer) {
          auto r = *script->steps[i].answer;
          if (!r.error && r.embeddings.size() != call.inputs.size())
            r = ok_result(call.inputs.size());
          return r;
        }
        if (i >= script->steps.size())
          return ok_result(call.inputs.size());
        auto rp = self->make_response_promise<call_result>();
        script->held.push_back(rp);
        return rp;
      },
      [](health_atom) {
        return upstream_health{};
      },
      [](restart_atom, uint32_t, uint64_t) {},
      [](probe_atom, uint64_t) {},
  };
}

std::shared_ptr<request_env> make_request_env() {
  auto env = std::make_shared<request_env>();
  env->retry.max_attempts = 4;
  env->retry.backoff_base = 100ms;
  env->retry.backoff_cap = 1000ms;
  env->retry.max_retry_after = 3000ms;
  env->default_timeout = 10000ms;
  return env;
}

route make_route(const pool_actor& pool, std::string name = "up1") {
  route rt;
  rt.pool = pool;
  rt.name = std::move(name);
  rt.profile = profile_for(provider_kind::openai);
  rt.model = "m";
  return rt;
}

embed_request make_request(std::vector<std::string> inputs,
                           caf::timespan timeout = caf::timespan{0}) {
  embed_request req;
  req.model = "m";
  req.inputs = std::move(inputs);
  req.timeout = timeout;
  req.request_id = "t";
  return req;
}

/// Sends `req` to a request actor from a scoped actor and returns the handle
/// to collect the single answer later.
struct caller {
  caf::scoped_actor self;
  explicit caller(caf::actor_system& sys) : self(sys) {}

  void send(const request_actor& hdl, embed_request req) {
    self->send(hdl, embed_atom_v, std::move(req));
  }

  /// Returns the one answer; fails the test if none (or more than one)
  /// arrived.
  caf::expected<embed_result> answer() {
    REQUIRE(!self->mailbox().empty());
    caf::expected<embed_result> out{caf::error{}};
    self->receive(
        [&](embed_result& r) {
          out = std::move(r);
        },
        [&](caf::error& err) {
          out = std::move(err);
        });
    CHECK(self->mailbox().empty());
    return out;
  }
};

} // namespace

TEST_CASE("retries use full-jitter exponential backoff in virtual time") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  script->steps = {{err_result(errc::connection_failed, true)},
                   {err_result(errc::upstream_error, true)}};
  auto pool = vt.sys->spawn(scripted_pool, script);
  auto req = vt.sys->spawn(request_actor_fn, make_request_env(),
                           std::vector<route>{make_route(pool)}, uint64_t{42});
  caller c{*vt.sys};
  auto t0 = vt.now();
  c.send(req, make_request({"a", "b"}));
  vt.sched->run();
  REQUIRE(script->arrivals.size() == 1);
  REQUIRE(vt.sched->trigger_timeout()); // first retry timer
  vt.sched->run();
  REQUIRE(script->arrivals.size() == 2);
  REQUIRE(vt.sched->trigger_timeout()); // second retry timer
  vt.sched->run();
  REQUIRE(script->arrivals.size() == 3);
  auto d1 = script->arrivals[1] - script->arrivals[0];
  auto d2 = script->arrivals[2] - script->arrivals[1];
  CHECK(script->arrivals[0] == t0);
  CHECK(d1 >= 0ms);
  CHECK(d1 <= 100ms); // retry 1: uniform(0, base)
  CHECK(d2 >= 0ms);
  CHECK(d2 <= 200ms); // retry 2: uniform(0, 2 * base)
  CHECK(script->retry_flags == std::vector<bool>{false, true, true});
  auto res = c.answer();
  REQUIRE(res);
  CHECK(res->embeddings.size() == 2);
  CHECK(res->embeddings[0][0] == 1.0f);
  CHECK(res->embeddings[1][0] == 2.0f);
  CHECK(res->upstream == "up1");
}

TEST_CASE("jittered backoff stays below its exponential ceiling") {
  backoff_policy b{100ms, 1000ms, 7};
  CHECK(b.ceiling(1) == 100ms);
  CHECK(b.ceiling(2) == 200ms);
  CHECK(b.ceiling(4) == 800ms);
  CHECK(b.ceiling(5) == 1000ms); // capped
  CHECK(b.ceiling(30) == 1000ms);
  caf::timespan lo = 1h;
  caf::timespan hi = 0ms;
  for (int i = 0; i < 1000; ++i) {
    auto d = b.next_delay(3, 0ms);
    lo = std::min(lo, d);
    hi = std::max(hi, d);
    REQUIRE(d <= 400ms);
  }
  CHECK(lo < 40ms); // really jittered over the whole range
  CHECK(hi > 360ms);
  CHECK(b.next_delay(1, 750ms) == 750ms); // an upstream hint wins
}

TEST_CASE("an upstream retry-after hint sets the retry time exactly") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  script->steps = {{err_result(errc::rate_limited, true, 750)}};
  auto pool = vt.sys->spawn(scripted_pool, script);
  auto req = vt.sys->spawn(request_actor_fn, make_request_env(),
                           std::vector<route>{make_route(pool)}, uint64_t{1});
  caller c{*vt.sys};
  c.send(req, make_request({"a"}));
  vt.sched->run();
  REQUIRE(vt.sched->trigger_timeout());
  vt.sched->run();
  REQUIRE(script->arrivals.size() == 2);
  CHECK(script->arrivals[1] - script->arrivals[0] == 750ms);
  CHECK(c.answer());
}

TEST_CASE("a retry that cannot happen before the deadline fails at once") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  script->steps = {{err_result(errc::rate_limited, true, 2500)}};
  auto pool = vt.sys->spawn(scripted_pool, script);
  auto req = vt.sys->spawn(request_actor_fn, make_request_env(),
                           std::vector<route>{make_route(pool)}, uint64_t{1});
  caller c{*vt.sys};
  auto t0 = vt.now();
  c.send(req, make_request({"a"}, 2000ms));
  vt.sched->run();
  auto res = c.answer();
  REQUIRE(!res);
  CHECK(error_code(res.error()) == errc::rate_limited);
  CHECK(error_detail(res.error()).find("no time left") != std::string::npos);
  CHECK(vt.now() == t0); // answered without waiting
  CHECK(script->arrivals.size() == 1);
}

TEST_CASE("a retry-after beyond max_retry_after is not waited for") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  script->steps = {{err_result(errc::rate_limited, true, 5000)}};
  auto pool = vt.sys->spawn(scripted_pool, script);
  auto req = vt.sys->spawn(request_actor_fn, make_request_env(),
                           std::vector<route>{make_route(pool)}, uint64_t{1});
  caller c{*vt.sys};
  c.send(req, make_request({"a"}, 60000ms));
  vt.sched->run();
  auto res = c.answer();
  REQUIRE(!res);
  CHECK(error_code(res.error()) == errc::rate_limited);
  CHECK(script->arrivals.size() == 1);
}

TEST_CASE("the deadline answers deadline_exceeded exactly on time") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  script->steps = {{std::nullopt}}; // the pool never answers
  auto pool = vt.sys->spawn(scripted_pool, script);
  auto req = vt.sys->spawn(request_actor_fn, make_request_env(),
                           std::vector<route>{make_route(pool)}, uint64_t{1});
  caller c{*vt.sys};
  auto t0 = vt.now();
  c.send(req, make_request({"a"}, 1500ms));
  vt.sched->run();
  CHECK(c.self->mailbox().empty());
  REQUIRE(vt.sched->trigger_timeout());
  vt.sched->run();
  CHECK(vt.now() - t0 == 1500ms);
  auto res = c.answer();
  REQUIRE(!res);
  CHECK(error_code(res.error()) == errc::deadline_exceeded);
  script->held.clear(); // breaks the pool -> script -> promise cycle
}

TEST_CASE("non-retryable errors are answered after one attempt") {
  for (auto code : {errc::auth_failed, errc::quota_exceeded,
                    errc::invalid_input, errc::tls_failed}) {
    virtual_time vt;
    auto script = std::make_shared<pool_script>();
    script->steps = {{err_result(code, false)}};
    auto pool = vt.sys->spawn(scripted_pool, script);
    auto req = vt.sys->spawn(request_actor_fn, make_request_env(),
                             std::vector<route>{make_route(pool)}, uint64_t{1});
    caller c{*vt.sys};
    c.send(req, make_request({"a"}));
    vt.sched->run();
    auto res = c.answer();
    REQUIRE(!res);
    CHECK(error_code(res.error()) == code);
    CHECK(script->arrivals.size() == 1);
    CHECK(!vt.sched->has_pending_timeout());
  }
}

TEST_CASE("retries stop after max_attempts with the last error") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  for (int i = 0; i < 10; ++i)
    script->steps.push_back({err_result(errc::upstream_error, true)});
  auto pool = vt.sys->spawn(scripted_pool, script);
  auto req = vt.sys->spawn(request_actor_fn, make_request_env(),
                           std::vector<route>{make_route(pool)}, uint64_t{3});
  caller c{*vt.sys};
  c.send(req, make_request({"a"}));
  vt.sched->run();
  while (vt.sched->trigger_timeout())
    vt.sched->run();
  CHECK(script->arrivals.size() == 4);
  auto res = c.answer();
  REQUIRE(!res);
  CHECK(error_code(res.error()) == errc::upstream_error);
  CHECK(error_detail(res.error()).find("after 4 attempts")
        != std::string::npos);
}

TEST_CASE("invalid input is rejected before any call") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  auto pool = vt.sys->spawn(scripted_pool, script);
  for (auto inputs :
       {std::vector<std::string>{}, std::vector<std::string>{"ok", "   "},
        std::vector<std::string>{std::string("a\0b", 3)},
        std::vector<std::string>{"\xff\xfe"}}) {
    auto req = vt.sys->spawn(request_actor_fn, make_request_env(),
                             std::vector<route>{make_route(pool)}, uint64_t{1});
    caller c{*vt.sys};
    c.send(req, make_request(inputs));
    vt.sched->run();
    auto res = c.answer();
    REQUIRE(!res);
    CHECK(error_code(res.error()) == errc::invalid_input);
  }
  CHECK(script->arrivals.empty());
}

TEST_CASE("a down upstream fails over to the next one serving the model") {
  virtual_time vt;
  auto down = std::make_shared<pool_script>();
  down->steps = {{err_result(errc::upstream_down, false, 1000)}};
  auto healthy = std::make_shared<pool_script>();
  auto p1 = vt.sys->spawn(scripted_pool, down);
  auto p2 = vt.sys->spawn(scripted_pool, healthy);
  auto req = vt.sys->spawn(
      request_actor_fn, make_request_env(),
      std::vector<route>{make_route(p1, "a"), make_route(p2, "b")},
      uint64_t{1});
  caller c{*vt.sys};
  c.send(req, make_request({"x", "y", "z"}));
  vt.sched->run();
  auto res = c.answer();
  REQUIRE(res);
  CHECK(res->upstream == "b");
  CHECK(res->embeddings.size() == 3);
  CHECK(healthy->retry_flags == std::vector<bool>{false});
}

TEST_CASE("large caller batches are split and reassembled in order") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  auto pool = vt.sys->spawn(scripted_pool, script);
  auto rt = make_route(pool);
  rt.profile = profile_for(provider_kind::tei); // 32 inputs per request
  std::vector<std::string> inputs;
  for (int i = 0; i < 100; ++i)
    inputs.push_back("text " + std::to_string(i));
  auto req = vt.sys->spawn(request_actor_fn, make_request_env(),
                           std::vector<route>{rt}, uint64_t{1});
  caller c{*vt.sys};
  c.send(req, make_request(inputs));
  vt.sched->run();
  CHECK(script->arrivals.size() == 4); // 32 + 32 + 32 + 4
  auto res = c.answer();
  REQUIRE(res);
  REQUIRE(res->embeddings.size() == 100);
  // ok_result numbers vectors 1.0, 2.0, ... within each chunk.
  CHECK(res->embeddings[0][0] == 1.0f);
  CHECK(res->embeddings[31][0] == 32.0f);
  CHECK(res->embeddings[32][0] == 1.0f);
  CHECK(res->embeddings[99][0] == 4.0f);
}

// -- pool: retry budget and supervision ---------------------------------------

namespace {

/// Connection behaviour for pool tests: answers at once with one vector per
/// input; "hold" keeps the promise (a slow call); "crash" throws; "exit"
/// terminates with an error.
struct fake_connections {
  int spawned = 0;
  std::vector<caf::typed_response_promise<call_result>> held;
  std::vector<connection_actor> conns;

  /// Asks the connection holding calls to answer them (promises must be
  /// delivered by their actor, never from the test thread).
  void release(virtual_time& vt) {
    for (auto& c : conns)
      caf::anon_send(c, io_done_atom_v, http_outcome{});
    vt.sched->run();
  }

  /// Breaks the handle cycles (behaviour -> this -> handles) at test end.
  void clear() {
    held.clear();
    conns.clear();
  }
};

std::shared_ptr<pool_env> make_pool_env(std::shared_ptr<fake_connections> fc,
                                        uint32_t connections) {
  auto env = std::make_shared<pool_env>();
  env->cfg.name = "fake";
  env->cfg.connections = connections;
  env->cfg.max_queue = 100;
  env->cfg.supervision.max_restarts = 3;
  env->cfg.supervision.within = 10000ms;
  env->cfg.supervision.restart_backoff = 10ms;
  env->cfg.supervision.restart_backoff_cap = 1000ms;
  env->cfg.supervision.down_backoff = 500ms;
  env->cfg.supervision.down_backoff_cap = 4000ms;
  env->profile = profile_for(provider_kind::openai);
  env->retry.budget_ratio = 0.5;
  env->retry.budget_min_retries = 1;
  env->batching = false;
  env->connection_behavior =
      [fc](connection_actor::pointer self) -> connection_actor::behavior_type {
    ++fc->spawned;
    return {
        [self, fc](call_atom,
                   connection_call& call) -> caf::result<call_result> {
          for (auto& in : call.inputs) {
            if (in == "crash")
              throw std::runtime_error("fake connection crashed");
            if (in == "exit") {
              // Dies holding the call: the promise is dropped unanswered.
              auto rp = self->make_response_promise<call_result>();
              self->quit(caf::sec::runtime_error);
              return rp;
            }
            if (in == "hold") {
              auto rp = self->make_response_promise<call_result>();
              fc->held.push_back(rp);
              return rp;
            }
          }
          auto r = ok_result(call.inputs.size());
          r.call_id = call.call_id;
          return r;
        },
        [fc](io_done_atom, http_outcome&) {
          auto held = std::move(fc->held);
          fc->clear();
          for (auto& rp : held)
            rp.deliver(ok_result(1));
        },
    };
  };
  env->on_connection_spawned = [fc](const connection_actor& hdl) {
    fc->conns.push_back(hdl);
  };
  return env;
}

upstream_call make_call(std::string text, bool is_retry = false) {
  upstream_call call;
  call.model = "m";
  call.inputs = {std::move(text)};
  call.is_retry = is_retry;
  return call;
}

struct pool_caller {
  caf::scoped_actor self;
  explicit pool_caller(caf::actor_system& sys) : self(sys) {}
  std::vector<call_result> answers() {
    std::vector<call_result> out;
    while (!self->mailbox().empty())
      self->receive(
          [&](call_result& r) {
            out.push_back(std::move(r));
          },
          [&](caf::error& err) {
            call_result r;
            r.error = err;
            out.push_back(std::move(r));
          });
    return out;
  }
};

} // namespace

TEST_CASE("retry budget admits retries up to its share of calls in flight") {
  retry_budget b{0.2, 2};
  CHECK(b.try_admit(true));
  CHECK(b.try_admit(true));
  CHECK(!b.try_admit(true)); // min 2 + 0.2 * 2 in flight = 2.4
  for (int i = 0; i < 10; ++i)
    CHECK(b.try_admit(false));
  CHECK(b.try_admit(true)); // 2 + 0.2 * 12 = 4.4 >= 3
  CHECK(b.retries_in_flight() == 3);
  b.release(true);
  CHECK(b.retries_in_flight() == 2);
  CHECK(b.in_flight() == 12);
}

TEST_CASE("the pool rejects retries beyond its retry budget") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto env = make_pool_env(fc, 1);
  env->retry.budget_ratio = 0.2;
  env->retry.budget_min_retries = 1;
  auto pool
      = vt.sys->spawn(pool_actor_fn, std::shared_ptr<const pool_env>{env});
  pool_caller c{*vt.sys};
  // Two first attempts in flight (one slow, one queued behind it).
  c.self->send(pool, call_atom_v, make_call("hold"));
  c.self->send(pool, call_atom_v, make_call("q"));
  vt.sched->run();
  // Budget: 1 + 0.2 * in_flight. r1: 1 <= 1.4 admitted; r2: 2 > 1.6 and
  // r3: 2 > 1.6 rejected.
  c.self->send(pool, call_atom_v, make_call("r1", true));
  c.self->send(pool, call_atom_v, make_call("r2", true));
  c.self->send(pool, call_atom_v, make_call("r3", true));
  vt.sched->run();
  auto answers = c.answers();
  REQUIRE(answers.size() == 2);
  for (auto& r : answers) {
    CHECK(error_code(r.error) == errc::overloaded);
    CHECK(error_detail(r.error).find("retry budget") != std::string::npos);
  }
  // Release the slow call: everything admitted completes.
  REQUIRE(fc->held.size() == 1);
  fc->release(vt);
  auto rest = c.answers();
  CHECK(rest.size() == 3);
  for (auto& r : rest)
    CHECK(!r.error);
  fc->clear();
}

TEST_CASE("the queue is bounded: a full queue answers overloaded at once") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto env = make_pool_env(fc, 1);
  env->cfg.max_queue = 3;
  env->retry.budget_min_retries = 100;
  auto pool
      = vt.sys->spawn(pool_actor_fn, std::shared_ptr<const pool_env>{env});
  pool_caller c{*vt.sys};
  c.self->send(pool, call_atom_v, make_call("hold"));
  for (int i = 0; i < 5; ++i)
    c.self->send(pool, call_atom_v, make_call("q" + std::to_string(i)));
  vt.sched->run();
  auto answers = c.answers();
  REQUIRE(answers.size() == 2); // 1 in flight, 3 queued, 2 rejected
  for (auto& r : answers)
    CHECK(error_code(r.error) == errc::overloaded);
  fc->release(vt);
  CHECK(c.answers().size() == 4);
  fc->clear();
}

TEST_CASE("a crashed connection is restarted after backoff, its work "
          "re-queued") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 1)});
  vt.sched->run();
  CHECK(fc->spawned == 1);
  pool_caller c{*vt.sys};
  c.self->send(pool, call_atom_v, make_call("exit"));
  c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  CHECK(c.answers().empty()); // work waits for the restarted connection
  auto t0 = vt.now();
  REQUIRE(vt.sched->trigger_timeout()); // restart timer
  CHECK(vt.now() - t0 == 10ms);         // restart_backoff
  vt.sched->run();
  CHECK(fc->spawned == 2);
  // "exit" crashed the new connection again; after the second restart the
  // poison call fails alone and "fine" succeeds.
  while (vt.sched->trigger_timeout())
    vt.sched->run();
  auto answers = c.answers();
  REQUIRE(answers.size() == 2);
  int failed = 0;
  for (auto& r : answers)
    if (r.error) {
      ++failed;
      CHECK(error_code(r.error) == errc::connection_failed);
    }
  CHECK(failed == 1);
  CHECK(fc->spawned == 4);
  fc->clear();
}

TEST_CASE("restart intensity exceeded marks the upstream down until a "
          "probe") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 2)});
  vt.sched->run();
  pool_caller c{*vt.sys};
  auto run_until_answer = [&] {
    vt.sched->run();
    auto answers = c.answers();
    while (answers.empty()) {
      REQUIRE(vt.sched->trigger_timeout());
      vt.sched->run();
      answers = c.answers();
    }
    REQUIRE(answers.size() == 1);
    return answers[0];
  };
  // A poison call kills three connections, then fails alone (3 restarts:
  // within the intensity of 3).
  c.self->send(pool, call_atom_v, make_call("crash"));
  auto first = run_until_answer();
  CHECK(error_code(first.error) == errc::connection_failed);
  // The fourth death within the window marks the upstream down.
  c.self->send(pool, call_atom_v, make_call("crash"));
  auto second = run_until_answer();
  CHECK(error_code(second.error) == errc::upstream_down);
  c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  auto down = c.answers();
  REQUIRE(down.size() == 1);
  CHECK(error_code(down[0].error) == errc::upstream_down);
  CHECK(error_retry_after(down[0].error) > 0ms);
  auto health = c.self->request(pool, caf::infinite, health_atom_v);
  vt.sched->run();
  health.receive(
      [](upstream_health& h) {
        CHECK(h.state == "down");
      },
      [](caf::error& err) {
        FAIL(caf::to_string(err));
      });
  // The probe (after down_backoff) brings the upstream back.
  vt.sched->advance_time(499ms);
  vt.sched->run();
  c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  auto still_down = c.answers();
  REQUIRE(still_down.size() == 1);
  CHECK(error_code(still_down[0].error) == errc::upstream_down);
  vt.sched->advance_time(1ms); // down_backoff reached: the probe fires
  vt.sched->run();
  c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  auto up = c.answers();
  REQUIRE(up.size() == 1);
  CHECK(!up[0].error);
  fc->clear();
}

TEST_CASE("restart intensity forgets restarts outside its window") {
  restart_intensity ri{2, 1000ms};
  restart_intensity::time_point t{};
  CHECK(ri.record(t));
  CHECK(ri.record(t + 100ms));
  CHECK(!ri.record(t + 200ms)); // third within 1 s
  restart_intensity ri2{2, 1000ms};
  CHECK(ri2.record(t));
  CHECK(ri2.record(t + 600ms));
  CHECK(ri2.record(t + 1700ms)); // the first two are older than 1 s
}

TEST_CASE("queued work whose deadline passed is answered, not sent") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 1)});
  pool_caller c{*vt.sys};
  c.self->send(pool, call_atom_v, make_call("hold"));
  auto late = make_call("late");
  late.deadline_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         (vt.now() + 100ms).time_since_epoch())
                         .count();
  c.self->send(pool, call_atom_v, late);
  vt.sched->run();
  vt.sched->clock().current_time += 200ms;
  fc->release(vt);
  auto answers = c.answers();
  REQUIRE(answers.size() == 2);
  CHECK(!answers[0].error);
  CHECK(error_code(answers[1].error) == errc::deadline_exceeded);
  fc->clear();
}
