// Deterministic tests of retry/backoff, deadlines, failover, the retry
// budget and supervision (restart backoff, restart intensity, down and probe),
// run on CAF's test_coordinator in virtual time: no sleeps, no sockets.
#include "classify.hpp"
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/provider.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"
#include "pool_actor.hpp"
#include "request_actor.hpp"
#include "virtual_time.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>

using namespace embedrt;
using namespace embedrt::detail;
using namespace std::chrono_literals;

using embedrt::testing::virtual_time;

namespace {

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

/// A scripted pool's answer to `call`: the next scripted result, or a
/// promise it holds (in `script.held`) when the script says never.
template <class Self>
caf::result<call_result> scripted_answer(Self* self, pool_script& script,
                                         const upstream_call& call) {
  auto i = script.arrivals.size();
  script.arrivals.push_back(self->clock().now());
  script.retry_flags.push_back(call.is_retry);
  if (i < script.steps.size() && script.steps[i].answer) {
    auto r = *script.steps[i].answer;
    if (!r.error && r.embeddings.size() != call.inputs.size())
      r = ok_result(call.inputs.size());
    return r;
  }
  if (i >= script.steps.size())
    return ok_result(call.inputs.size());
  auto rp = self->template make_response_promise<call_result>();
  script.held.push_back(rp);
  return rp;
}

pool_actor::behavior_type scripted_pool(pool_actor::pointer self,
                                        std::shared_ptr<pool_script> script) {
  return {
      [self, script](call_atom,
                     upstream_call& call) -> caf::result<call_result> {
        return scripted_answer(self, *script, call);
      },
      [](health_atom) {
        return upstream_health{};
      },
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

/// A request actor as the service runs one (reused; the routes and the
/// settings come with each request), with the job its test sends it.
struct test_request {
  request_impl hdl;
  request_job job;
};

test_request spawn_request(virtual_time& vt,
                           std::shared_ptr<const request_env> env,
                           std::vector<route> routes, uint64_t seed) {
  return {vt.sys->spawn(request_actor_fn, request_owner{}, seed),
          request_job{std::move(env), std::move(routes), {}, {}}};
}

/// Sends `req` to a request actor from a scoped actor and returns the handle
/// to collect the single answer later.
struct caller {
  caf::scoped_actor self;
  explicit caller(caf::actor_system& sys) : self(sys) {}

  void send(const test_request& r, embed_request req) {
    self->send(r.hdl, embed_atom_v, r.job, std::move(req));
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
  auto req = spawn_request(vt, make_request_env(),
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
  auto req = spawn_request(vt, make_request_env(),
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
  auto req = spawn_request(vt, make_request_env(),
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
  auto req = spawn_request(vt, make_request_env(),
                           std::vector<route>{make_route(pool)}, uint64_t{1});
  caller c{*vt.sys};
  c.send(req, make_request({"a"}, 60000ms));
  vt.sched->run();
  auto res = c.answer();
  REQUIRE(!res);
  CHECK(error_code(res.error()) == errc::rate_limited);
  CHECK(script->arrivals.size() == 1);
}

TEST_CASE("non-retryable errors are answered after one attempt") {
  for (auto code : {errc::auth_failed, errc::quota_exceeded,
                    errc::invalid_input, errc::tls_failed}) {
    virtual_time vt;
    auto script = std::make_shared<pool_script>();
    script->steps = {{err_result(code, false)}};
    auto pool = vt.sys->spawn(scripted_pool, script);
    auto req = spawn_request(vt, make_request_env(),
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
  auto req = spawn_request(vt, make_request_env(),
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
       {std::vector<std::string>{}, std::vector<std::string>{"ok", ""},
        std::vector<std::string>{std::string("a\0b", 3)},
        std::vector<std::string>{"\xff\xfe"}}) {
    auto req = spawn_request(vt, make_request_env(),
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
  auto req = spawn_request(
      vt, make_request_env(),
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
  auto req = spawn_request(vt, make_request_env(), std::vector<route>{rt},
                           uint64_t{1});
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
  /// Inputs of every upstream call, in dispatch order.
  std::vector<std::vector<std::string>> calls;
  /// Whether each call asked for float although base64 is configured.
  std::vector<bool> float_only;
  /// A call with more inputs than this is refused as too large (0: any).
  std::size_t max_batch = 0;
  /// `release` answers held calls with a 500 instead of vectors.
  bool release_fails = false;
  /// Calls held ("hold"): their id and who to answer.
  struct held_call {
    uint64_t call_id = 0;
    caf::strong_actor_ptr reply_to;
    /// The connection actor holding it (only it answers it).
    caf::actor_addr by;
  };
  std::vector<held_call> held;
  std::vector<connection_impl> conns;

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
  env->connection_behavior
      = [fc](connection_impl::pointer self) -> connection_impl::behavior_type {
    ++fc->spawned;
    // Answers like a real connection: a message to the call's sender.
    auto reply = [self](const caf::strong_actor_ptr& to, call_result r) {
      self->send(caf::actor_cast<connection_listener>(to), result_atom_v,
                 std::move(r));
    };
    return {
        [self, fc, reply](call_atom, connection_call& call) {
          fc->calls.push_back(call.inputs);
          fc->float_only.push_back(call.float_only);
          auto to = self->current_sender();
          if (fc->max_batch != 0 && call.inputs.size() > fc->max_batch) {
            auto r = err_result(errc::invalid_input, false);
            r.too_large = true;
            r.call_id = call.call_id;
            reply(to, std::move(r));
            return;
          }
          for (auto& in : call.inputs) {
            if (in == "fail" || in == "bad") {
              call_result r;
              if (in == "fail") {
                r.error = make_error(errc::upstream_error, "fake 500", 500);
                r.retryable = true;
              } else {
                r.error = make_error(errc::invalid_input, "fake 400", 400);
              }
              r.call_id = call.call_id;
              reply(to, std::move(r));
              return;
            }
            if (in == "crash")
              throw std::runtime_error("fake connection crashed");
            if (in == "exit") {
              // Dies holding the call: it is never answered.
              self->quit(caf::sec::runtime_error);
              return;
            }
            if (in == "badparam") {
              // A refusal naming its parameter: about this input.
              auto r = err_result(errc::invalid_input, false);
              r.names_param = true;
              r.call_id = call.call_id;
              reply(to, std::move(r));
              return;
            }
            if (in == "b64" && !call.float_only) {
              // An upstream that only answers floats.
              auto r = err_result(errc::invalid_input, false);
              r.base64_refused = true;
              r.request_level = true;
              r.call_id = call.call_id;
              reply(to, std::move(r));
              return;
            }
            if (in == "hold") {
              fc->held.push_back({call.call_id, to, self->address()});
              return;
            }
          }
          auto r = ok_result(call.inputs.size());
          r.call_id = call.call_id;
          reply(to, std::move(r));
        },
        [self, fc, reply](io_done_atom, http_outcome&) {
          // Answer only the calls this connection holds.
          std::vector<fake_connections::held_call> mine;
          for (std::size_t i = 0; i < fc->held.size();) {
            if (fc->held[i].by == self->address()) {
              mine.push_back(std::move(fc->held[i]));
              fc->held.erase(fc->held.begin() + static_cast<std::ptrdiff_t>(i));
            } else {
              ++i;
            }
          }
          auto fails = fc->release_fails;
          if (fc->held.empty())
            fc->clear();
          for (auto& h : mine) {
            call_result r;
            if (fails) {
              r.error = make_error(errc::upstream_error, "fake 500", 500);
              r.retryable = true;
            } else {
              r = ok_result(1);
            }
            r.call_id = h.call_id;
            reply(h.reply_to, std::move(r));
          }
        },
    };
  };
  env->on_connection_spawned = [fc](const connection_actor& hdl) {
    fc->conns.push_back(caf::actor_cast<connection_impl>(hdl));
  };
  return env;
}

upstream_call make_call(std::string text, bool is_retry = false) {
  upstream_call call;
  call.model = "m";
  call.inputs = {std::move(text)};
  call.tokens = static_cast<int64_t>(estimate_tokens(call.inputs.front()));
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

/// A one-connection pool whose retry budget is 1 + 0.2 x the calls at the
/// pool, holding two first attempts (one slow on the connection, one
/// queued behind it), and its caller.
struct budget_pool {
  virtual_time vt;
  std::shared_ptr<fake_connections> fc = std::make_shared<fake_connections>();
  pool_actor pool;
  pool_caller c{*vt.sys};

  explicit budget_pool(bool pacing = true) {
    auto env = make_pool_env(fc, 1);
    env->retry.budget_ratio = 0.2;
    env->retry.budget_min_retries = 1;
    env->cfg.pacing = pacing;
    pool = vt.sys->spawn(pool_actor_fn, std::shared_ptr<const pool_env>{env});
    c.self->send(pool, call_atom_v, make_call("hold"));
    c.self->send(pool, call_atom_v, make_call("q"));
    vt.sched->run();
  }
};

TEST_CASE("the pool rejects retries beyond its retry budget") {
  budget_pool b;
  auto& [vt, fc, pool, c] = b;
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

TEST_CASE("a retry after a 429 with Retry-After is paced, not budgeted, while "
          "pacing is on") {
  for (bool pacing : {true, false}) {
    CAPTURE(pacing);
    budget_pool b{pacing};
    auto& [vt, fc, pool, c] = b;
    // The budget (1 + 0.2 x 3 in flight) takes r1 and no other retry.
    c.self->send(pool, call_atom_v, make_call("r1", true));
    auto after_429 = make_call("r2", true);
    after_429.after_rate_limit = true;
    c.self->send(pool, call_atom_v, std::move(after_429));
    c.self->send(pool, call_atom_v, make_call("r3", true));
    vt.sched->run();
    auto refused = c.answers();
    // With pacing the pacer holds what a 429 asked to hold: r2 is admitted
    // outside the budget and r3 is still refused (r2 took no share).
    REQUIRE(refused.size() == (pacing ? 1u : 2u));
    for (auto& r : refused)
      CHECK(error_detail(r.error).find("retry budget") != std::string::npos);
    REQUIRE(fc->held.size() == 1);
    fc->release(vt);
    auto rest = c.answers();
    CHECK(rest.size() == (pacing ? 4u : 3u));
    for (auto& r : rest)
      CHECK(!r.error);
    fc->clear();
  }
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

TEST_CASE("pool: a connection stuck past its attempt timeout is killed by "
          "the watchdog, at exactly timeout + 2 s, and its call resent") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 1)});
  vt.sched->run();
  pool_caller c{*vt.sys};
  // "hold": the connection neither answers nor dies (a bug, or a wedged
  // actor); its own I/O deadline cannot help.
  c.self->send(pool, call_atom_v, make_call("hold"));
  vt.sched->run();
  REQUIRE(fc->calls.size() == 1);
  auto t0 = vt.now();
  // Only the watchdog is pending, armed for 10 s (attempt) + 2 s (grace).
  REQUIRE(vt.sched->clock().schedule().size() == 1);
  REQUIRE(vt.sched->trigger_timeout());
  CHECK(vt.now() - t0 == 12000ms);
  vt.sched->run();
  CHECK(c.answers().empty());           // requeued, not failed
  CHECK(fc->spawned == 1);              // killed; restarted after its backoff
  REQUIRE(vt.sched->trigger_timeout()); // restart timer
  CHECK(vt.now() - t0 == 12000ms + 10ms);
  vt.sched->run();
  CHECK(fc->spawned == 2);
  REQUIRE(fc->calls.size() == 2); // the same call, on the new connection
  CHECK(fc->calls[1] == std::vector<std::string>{"hold"});
  // This one answers in time: the call succeeds, exactly once.
  fc->release(vt);
  auto answers = c.answers();
  REQUIRE(answers.size() == 1);
  CHECK(!answers[0].error);
  fc->clear();
}

TEST_CASE("pool: calls leave no timer behind (one watchdog, not a CAF "
          "timeout per call)") {
  // CAF 0.17 never cancels a request's timeout when the answer arrives: a
  // timeout per upstream call would keep one clock entry per call for the
  // attempt timeout, i.e. memory and clock work growing with the call rate.
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 4)});
  vt.sched->run();
  pool_caller c{*vt.sys};
  // 500 calls in rounds of 50 (the queue holds 100).
  std::size_t ok = 0;
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 50; ++i)
      c.self->send(pool, call_atom_v, make_call("t" + std::to_string(i)));
    vt.sched->run();
    for (auto& r : c.answers())
      ok += r.error ? 0 : 1;
  }
  REQUIRE(ok == 500);
  CHECK(fc->calls.size() == 500);
  CHECK(vt.sched->clock().schedule().size() <= 1);
  // Idle again: the watchdog goes off once and is not re-armed.
  while (vt.sched->trigger_timeout())
    vt.sched->run();
  CHECK(vt.sched->clock().schedule().empty());
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
  late.budget = caf::timespan{100ms};
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

TEST_CASE("the deadline answers deadline_exceeded exactly on time") {
  // The request actor puts no timeout on its call: the pool answers a call
  // still queued at its deadline (its watchdog), and the request replies.
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 1)});
  pool_caller pc{*vt.sys};
  pc.self->send(pool, call_atom_v, make_call("hold")); // the one connection
  vt.sched->run();
  auto req = spawn_request(vt, make_request_env(),
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
  CHECK(error_detail(res.error()).find("deadline of 1500 ms exceeded")
        != std::string::npos);
  CHECK(fc->calls.size() == 1); // the queued call never went out
  CHECK(pc.answers().empty());  // the held call is still in flight
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
  vt.sched->run();
  fc->clear();
}

TEST_CASE("pool: a queued call is answered at its own deadline, not in "
          "queue order") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 1)});
  pool_caller c{*vt.sys};
  c.self->send(pool, call_atom_v, make_call("hold"));
  auto later = make_call("later");
  later.budget = caf::timespan{5000ms};
  auto sooner = make_call("sooner");
  sooner.budget = caf::timespan{1000ms};
  c.self->send(pool, call_atom_v, later);
  c.self->send(pool, call_atom_v, sooner);
  vt.sched->run();
  auto t0 = vt.now();
  REQUIRE(vt.sched->trigger_timeout());
  vt.sched->run();
  CHECK(vt.now() - t0 == 1000ms);
  auto first = c.answers();
  REQUIRE(first.size() == 1);
  CHECK(error_code(first[0].error) == errc::deadline_exceeded);
  REQUIRE(vt.sched->trigger_timeout());
  vt.sched->run();
  CHECK(vt.now() - t0 == 5000ms);
  auto second = c.answers();
  REQUIRE(second.size() == 1);
  CHECK(error_code(second[0].error) == errc::deadline_exceeded);
  CHECK(fc->calls.size() == 1);
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
  vt.sched->run();
  fc->clear();
}

TEST_CASE("pool: deadline-aware admission refuses at once what cannot "
          "finish within its deadline at the observed service rate") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto env = make_pool_env(fc, 2);
  env->retry.budget_min_retries = 100;
  auto pool
      = vt.sys->spawn(pool_actor_fn, std::shared_ptr<const pool_env>{env});
  pool_caller c{*vt.sys};
  // Queued calls are answered at once when they reach a connection; only the
  // two "hold" calls in flight take (virtual) time.
  auto timed = [](caf::timespan budget) {
    auto call = make_call("q");
    call.budget = budget;
    return call;
  };
  auto count_overloaded = [](const std::vector<call_result>& answers) {
    std::size_t n = 0;
    for (auto& r : answers)
      if (error_code(r.error) == errc::overloaded) {
        ++n;
        CHECK(error_detail(r.error).find("cannot finish within the deadline")
              != std::string::npos);
        CHECK(error_retry_after(r.error).count() >= 1);
      }
    return n;
  };
  c.self->send(pool, call_atom_v, make_call("hold"));
  c.self->send(pool, call_atom_v, make_call("hold"));
  vt.sched->run();
  // The fake forgets its connections once nothing is held: keep them.
  auto conns = fc->conns;
  REQUIRE(conns.size() == 2);
  auto release = [&] {
    fc->conns = conns;
    fc->release(vt);
  };
  SECTION("start-up: nothing observed yet, admission by count alone") {
    for (int i = 0; i < 30; ++i)
      c.self->send(pool, call_atom_v, timed(1000ms));
    vt.sched->run();
    CHECK(c.answers().empty());
    release();
    CHECK(c.answers().size() == 32);
  }
  SECTION("with a service time observed") {
    // Two calls take 100 ms each: 2 connections serve 20 calls/s.
    vt.sched->clock().current_time += 100ms;
    release();
    REQUIRE(c.answers().size() == 2);
    c.self->send(pool, call_atom_v, make_call("hold"));
    c.self->send(pool, call_atom_v, make_call("hold"));
    vt.sched->run();
    SECTION("the queue admits what completes within 1 s, refuses the rest") {
      // Position q completes in 50 ms (a connection frees up) + q x 100 ms
      // / 2 + 100 ms: q = 0..17 fit.
      for (int i = 0; i < 25; ++i)
        c.self->send(pool, call_atom_v, timed(1000ms));
      vt.sched->run();
      auto answers = c.answers();
      CHECK(answers.size() == 7);
      CHECK(count_overloaded(answers) == 7);
      // Calls without a deadline are admitted by count alone, and a longer
      // deadline still fits.
      c.self->send(pool, call_atom_v, make_call("q"));
      c.self->send(pool, call_atom_v, timed(5000ms));
      vt.sched->run();
      CHECK(c.answers().empty());
      // Everything admitted completes.
      release();
      auto done = c.answers();
      CHECK(done.size() == 22);
      for (auto& r : done)
        CHECK(!r.error);
    }
    SECTION("a slowdown counts before any result reports it") {
      // The calls in flight have taken 500 ms so far: the estimate is 400 ms
      // per call, not 100 ms, so only q = 0..2 fit in 1 s (200 + q x 200 +
      // 400 ms); with 100 ms, q = 0..17 would.
      vt.sched->clock().current_time += 500ms;
      for (int i = 0; i < 8; ++i)
        c.self->send(pool, call_atom_v, timed(1000ms));
      vt.sched->run();
      CHECK(count_overloaded(c.answers()) == 5);
      release();
      CHECK(c.answers().size() == 5);
    }
  }
  fc->clear();
}

TEST_CASE("pool: one hung call among many connections is not taken for a "
          "slower upstream by deadline-aware admission") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto env = make_pool_env(fc, 4);
  env->retry.budget_min_retries = 100;
  auto pool
      = vt.sys->spawn(pool_actor_fn, std::shared_ptr<const pool_env>{env});
  pool_caller c{*vt.sys};
  auto hold = [&](int n) {
    for (int i = 0; i < n; ++i)
      c.self->send(pool, call_atom_v, make_call("hold"));
    vt.sched->run();
  };
  // A service time of 100 ms observed on all four connections.
  hold(4);
  auto conns = fc->conns;
  REQUIRE(conns.size() == 4);
  auto release = [&] {
    fc->conns = conns;
    fc->release(vt);
  };
  vt.sched->clock().current_time += 100ms;
  release();
  REQUIRE(c.answers().size() == 4);
  // One call hangs for 900 ms; then the other three connections take calls
  // that have only just gone out.
  hold(1);
  vt.sched->clock().current_time += 900ms;
  hold(3);
  // Queued with 1 s left: at 100 ms a call on 4 connections, position q
  // completes in 50 + q x 25 + 100 ms, so all ten fit. Taking the hung
  // call's age for every connection's (800 ms a call) would refuse them all.
  for (int i = 0; i < 10; ++i) {
    auto call = make_call("q");
    call.budget = 1000ms;
    c.self->send(pool, call_atom_v, std::move(call));
  }
  vt.sched->run();
  CHECK(c.answers().empty());
  release();
  auto done = c.answers();
  CHECK(done.size() == 14);
  for (auto& r : done)
    CHECK(!r.error);
  fc->clear();
}

TEST_CASE("classify: a 400 refusing base64 is marked for a float retry") {
  openai::response_expectation b64;
  b64.inputs = 1;
  b64.encoding_format = openai::encoding::base64;
  auto refusal = [](std::string param, std::string text) {
    http_outcome out;
    out.status = 400;
    out.error_param = std::move(param);
    out.error_text = std::move(text);
    return out;
  };
  auto r = classify_outcome(refusal("encoding_format", "not supported"), b64,
                            "up");
  CHECK(r.base64_refused);
  CHECK(error_code(r.error) == errc::invalid_input);
  CHECK(classify_outcome(refusal("", "base64 is not supported"), b64, "up")
            .base64_refused);
  // Other 400s, or a float request, are not about the encoding.
  CHECK(!classify_outcome(refusal("input", "input[0] is empty"), b64, "up")
             .base64_refused);
  auto f32 = b64;
  f32.encoding_format = openai::encoding::float32;
  CHECK(!classify_outcome(refusal("encoding_format", "x"), f32, "up")
             .base64_refused);
}

TEST_CASE("classify: a body that is not an OpenAI error is quoted, on one "
          "ASCII line") {
  openai::response_expectation expect;
  expect.inputs = 1;
  http_outcome out;
  out.status = 400;
  out.body = "<html>\r\n<head><title>400 The plain HTTP request was sent to "
             "HTTPS port</title></head>\r\n<body>\xc3\xa9</body></html>";
  auto r = classify_outcome(std::move(out), expect, "up");
  auto detail = error_detail(r.error);
  CHECK(detail.find("The plain HTTP request was sent to HTTPS port")
        != std::string::npos);
  CHECK(detail.find('\r') == std::string::npos);
  CHECK(detail.find('\n') == std::string::npos);
  for (char c : detail)
    CHECK(static_cast<unsigned char>(c) < 0x80);
}

TEST_CASE("pool: an upstream that refuses base64 is asked in float from then "
          "on, and the refused call is resent") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 1)});
  pool_caller c{*vt.sys};
  c.self->send(pool, call_atom_v, make_call("b64"));
  vt.sched->run();
  auto answers = c.answers();
  REQUIRE(answers.size() == 1);
  CHECK(!answers[0].error);
  REQUIRE(fc->float_only.size() == 2);
  CHECK(!fc->float_only[0]); // base64, refused
  CHECK(fc->float_only[1]);  // the same call in float
  c.self->send(pool, call_atom_v, make_call("b64"));
  vt.sched->run();
  CHECK(!c.answers().at(0).error);
  REQUIRE(fc->float_only.size() == 3);
  CHECK(fc->float_only[2]); // remembered: no second refusal
  fc->clear();
}

TEST_CASE("pool: the same refusal for distinct requests makes the upstream "
          "misconfigured (502, health), a success ends it") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 1)});
  pool_caller c{*vt.sys};
  auto state = [&] {
    // The answer is in the mailbox once the scheduler ran: no blocking wait
    // on the test coordinator.
    std::string s;
    c.self->send(pool, health_atom_v);
    vt.sched->run();
    c.self->receive(
        [&](upstream_health& h) {
          s = h.state;
        },
        [&](caf::error& err) {
          FAIL(caf::to_string(err));
        });
    return s;
  };
  auto refused = [&](std::string request_id, std::string input = "bad") {
    auto call = make_call(std::move(input));
    call.request_id = std::move(request_id);
    c.self->send(pool, call_atom_v, std::move(call));
    vt.sched->run();
    auto answers = c.answers();
    REQUIRE(answers.size() == 1);
    return answers.front();
  };
  // Refusals naming a parameter (OpenAI's `param`: "input") are about the
  // request, however many callers get them.
  for (int i = 0; i < 6; ++i)
    CHECK(error_code(refused("p" + std::to_string(i), "badparam").error)
          == errc::invalid_input);
  CHECK(state() == "up");
  // One request's refusals (bisection) count once.
  for (int i = 0; i < 6; ++i)
    CHECK(error_code(refused("same").error) == errc::invalid_input);
  CHECK(state() == "up");
  // Four more distinct requests: the fifth distinct one is the upstream's.
  for (int i = 1; i <= 3; ++i)
    CHECK(error_code(refused("r" + std::to_string(i)).error)
          == errc::invalid_input);
  auto fifth = refused("r4");
  CHECK(error_code(fifth.error) == errc::upstream_error);
  CHECK(error_http_status(fifth.error) == 502);
  CHECK(error_detail(fifth.error).find("fake 400") != std::string::npos);
  CHECK(state() == "misconfigured");
  CHECK(error_code(refused("r5").error) == errc::upstream_error);
  // It answers again: healthy, and a refusal is the caller's again.
  c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  CHECK(!c.answers().at(0).error);
  CHECK(state() == "up");
  CHECK(error_code(refused("r6").error) == errc::invalid_input);
  fc->clear();
}

// -- breaker: the state machine
// ------------------------------------------------

namespace {

breaker_config test_breaker_config() {
  breaker_config cfg;
  cfg.consecutive_failures = 3;
  cfg.random_run_odds = 0.0; // a plain count (breaker_rule_test.cpp)
  cfg.failure_rate = 0.5;
  cfg.window = 10;
  cfg.min_calls = 6;
  cfg.reset_timeout = 1000ms;
  cfg.max_reset_timeout = 5000ms;
  cfg.jitter = 0.0;
  cfg.max_retry_after = 20000ms;
  cfg.half_open_probes = 1;
  return cfg;
}

constexpr auto F = call_verdict::failure;
constexpr auto S = call_verdict::success;
constexpr auto I = call_verdict::ignored;

} // namespace

TEST_CASE("breaker: closed -> open after N consecutive failures") {
  circuit_breaker cb{test_breaker_config(), 1};
  CHECK(!cb.record(F, 0ms, "x"));
  CHECK(!cb.record(F, 0ms, "x"));
  CHECK(!cb.record(S, 0ms, "")); // a success resets the run
  CHECK(!cb.record(F, 0ms, "x"));
  CHECK(!cb.record(F, 0ms, "x"));
  CHECK(!cb.record(I, 0ms, "")); // ignored verdicts count for nothing
  auto t = cb.record(F, 0ms, "boom");
  REQUIRE(t);
  CHECK(t->from == breaker_state::closed);
  CHECK(t->to == breaker_state::open);
  CHECK(t->open_for == 1000ms);
  CHECK(t->reason.find("3 consecutive failures") != std::string::npos);
  CHECK(cb.state() == breaker_state::open);
  // Open: verdicts of calls still in flight change nothing.
  CHECK(!cb.record(S, 0ms, ""));
  CHECK(!cb.record(F, 0ms, "x"));
  CHECK(cb.state() == breaker_state::open);
}

TEST_CASE("breaker: closed -> open on the failure rate once the window has "
          "its minimum of calls") {
  auto cfg = test_breaker_config();
  cfg.consecutive_failures = 0; // rate only
  circuit_breaker cb{cfg, 1};
  // F S F S F: 3 of 5 failed, but fewer than min_calls (6) calls.
  for (auto v : {F, S, F, S, F})
    CHECK(!cb.record(v, 0ms, "x"));
  CHECK(cb.window_calls() == 5);
  CHECK(cb.window_failures() == 3);
  auto t = cb.record(S, 0ms, ""); // 3 of 6 = 50 %, but a success never trips
  CHECK(!t);
  t = cb.record(F, 0ms, "x"); // 4 of 7 >= 50 %
  REQUIRE(t);
  CHECK(t->to == breaker_state::open);
  CHECK(t->reason.find("failure rate 4/7") != std::string::npos);
}

TEST_CASE("breaker: the sliding window forgets calls older than its size") {
  auto cfg = test_breaker_config();
  cfg.consecutive_failures = 0;
  cfg.window = 4;
  cfg.min_calls = 4;
  circuit_breaker cb{cfg, 1};
  for (auto v : {F, S, S, S, S, S}) // the failure leaves the window
    CHECK(!cb.record(v, 0ms, "x"));
  CHECK(cb.window_calls() == 4);
  CHECK(cb.window_failures() == 0);
  CHECK(!cb.record(F, 0ms, "x"));  // 1 of 4
  auto t = cb.record(F, 0ms, "x"); // 2 of 4 = 50 %
  REQUIRE(t);
  CHECK(t->to == breaker_state::open);
}

TEST_CASE("breaker: open time grows exponentially with trips, capped") {
  circuit_breaker cb{test_breaker_config(), 1};
  auto trip = [&] {
    std::optional<breaker_transition> t;
    if (cb.state() == breaker_state::closed) {
      for (int i = 0; i < 3 && !t; ++i)
        t = cb.record(F, 0ms, "x");
    } else {
      REQUIRE(cb.open_time_over());
      CHECK(cb.state() == breaker_state::half_open);
      t = cb.record(F, 0ms, "probe"); // the probe fails: open again
    }
    REQUIRE(t);
    CHECK(t->to == breaker_state::open);
    return t->open_for;
  };
  CHECK(trip() == 1000ms);
  CHECK(trip() == 2000ms);
  CHECK(trip() == 4000ms);
  CHECK(trip() == 5000ms); // max_reset_timeout
  CHECK(trip() == 5000ms);
  CHECK(cb.trips() == 5);
  // Closing resets the growth.
  REQUIRE(cb.open_time_over());
  auto closed = cb.record(S, 0ms, "");
  REQUIRE(closed);
  CHECK(closed->to == breaker_state::closed);
  CHECK(cb.trips() == 0);
  CHECK(trip() == 1000ms);
}

TEST_CASE("breaker: jitter lengthens the open time by up to its factor") {
  auto cfg = test_breaker_config();
  cfg.jitter = 0.5;
  cfg.consecutive_failures = 1;
  std::set<int64_t> seen;
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    circuit_breaker cb{cfg, seed};
    auto t = cb.record(F, 0ms, "x");
    REQUIRE(t);
    CHECK(t->open_for >= 1000ms);
    CHECK(t->open_for < 1500ms);
    seen.insert(t->open_for.count());
  }
  CHECK(seen.size() > 10); // actually random
}

TEST_CASE("breaker: an upstream Retry-After longer than the backoff sets "
          "the open time") {
  auto cfg = test_breaker_config();
  circuit_breaker cb{cfg, 1};
  CHECK(!cb.record(F, 7000ms, "429"));
  CHECK(!cb.record(F, 0ms, "500"));
  auto t = cb.record(F, 3000ms, "429");
  REQUIRE(t);
  CHECK(t->open_for == 7000ms); // the longest hint since the last success
  CHECK(t->reason.find("retry after 7000 ms") != std::string::npos);
  // A hint shorter than the backoff does not shorten it.
  REQUIRE(cb.open_time_over());
  t = cb.record(F, 500ms, "probe");
  REQUIRE(t);
  CHECK(t->open_for == 2000ms);
  // Hints are capped at max_retry_after.
  REQUIRE(cb.open_time_over());
  t = cb.record(F, 600000ms, "probe");
  REQUIRE(t);
  CHECK(t->open_for == 20000ms);
  // A success forgets earlier hints.
  circuit_breaker cb2{cfg, 1};
  CHECK(!cb2.record(F, 9000ms, "429"));
  CHECK(!cb2.record(S, 0ms, ""));
  for (int i = 0; i < 2; ++i)
    CHECK(!cb2.record(F, 0ms, "x"));
  t = cb2.record(F, 0ms, "x");
  REQUIRE(t);
  CHECK(t->open_for == 1000ms);
}

TEST_CASE("breaker: half-open closes after all probes succeed, re-opens on "
          "a failed probe") {
  auto cfg = test_breaker_config();
  cfg.half_open_probes = 2;
  circuit_breaker cb{cfg, 1};
  CHECK(!cb.open_time_over()); // only from open
  for (int i = 0; i < 2; ++i)
    CHECK(!cb.record(F, 0ms, "x"));
  REQUIRE(cb.record(F, 0ms, "x"));
  auto h = cb.open_time_over();
  REQUIRE(h);
  CHECK(h->from == breaker_state::open);
  CHECK(h->to == breaker_state::half_open);
  CHECK(!cb.record(S, 0ms, "")); // 1 of 2 probes
  CHECK(!cb.record(I, 0ms, "")); // ignored: still waiting
  auto c = cb.record(S, 0ms, "");
  REQUIRE(c);
  CHECK(c->from == breaker_state::half_open);
  CHECK(c->to == breaker_state::closed);
  // Again, and this time the second probe fails.
  for (int i = 0; i < 2; ++i)
    CHECK(!cb.record(F, 0ms, "x"));
  REQUIRE(cb.record(F, 0ms, "x"));
  REQUIRE(cb.open_time_over());
  CHECK(!cb.record(S, 0ms, ""));
  auto o = cb.record(F, 0ms, "probe 2");
  REQUIRE(o);
  CHECK(o->from == breaker_state::half_open);
  CHECK(o->to == breaker_state::open);
  CHECK(o->reason.find("probe failed") != std::string::npos);
}

TEST_CASE("breaker: what counts as a failure") {
  auto cfg = test_breaker_config();
  auto verdict = [&](errc code, int32_t status = 0, bool timed_out = false,
                     bool capped = false) {
    call_result r;
    r.error = make_error(code, "x", status);
    r.timed_out = timed_out;
    attempt_facts facts;
    facts.deadline_capped = capped;
    facts.waited = 100ms;
    return judge_call(r, facts, cfg);
  };
  CHECK(verdict(errc::connection_failed) == F);
  CHECK(verdict(errc::connection_failed, 0, true) == F);
  CHECK(verdict(errc::connection_failed, 0, true, true) == I); // caller's
  CHECK(verdict(errc::tls_failed) == F);
  CHECK(verdict(errc::invalid_response) == F);
  CHECK(verdict(errc::rate_limited, 429) == F);
  CHECK(verdict(errc::upstream_error, 500) == F);
  CHECK(verdict(errc::upstream_error, 503) == F);
  CHECK(verdict(errc::upstream_error, 408) == F);
  CHECK(verdict(errc::upstream_error, 404) == I);
  CHECK(verdict(errc::invalid_input, 400) == I);
  CHECK(verdict(errc::invalid_input, 413) == I);
  CHECK(verdict(errc::invalid_input, 422) == I);
  CHECK(verdict(errc::auth_failed, 401) == I);
  CHECK(verdict(errc::quota_exceeded, 429) == I);
  CHECK(verdict(errc::deadline_exceeded) == I);
  CHECK(verdict(errc::cancelled) == I);
  call_result ok;
  ok.upstream_ns = 3'000'000'000;
  CHECK(judge_call(ok, attempt_facts{}, cfg) == S);
  cfg.slow_call_threshold = 2000ms;
  CHECK(judge_call(ok, attempt_facts{}, cfg) == F); // slow calls, if set
  ok.upstream_ns = 1'000'000'000;
  CHECK(judge_call(ok, attempt_facts{}, cfg) == S);
}

TEST_CASE("breaker: an attempt cut by its caller's deadline counts as a "
          "failure once the upstream was silent far beyond its latency") {
  auto cfg = test_breaker_config();
  cfg.silent_call_threshold = 1000ms;
  cfg.silent_call_factor = 4.0;
  call_result r;
  r.error = make_error(errc::connection_failed, "timeout");
  r.timed_out = true;
  auto judge = [&](std::chrono::nanoseconds waited,
                   std::chrono::nanoseconds typical, bool capped = true) {
    attempt_facts facts;
    facts.deadline_capped = capped;
    facts.waited = waited;
    facts.typical = typical;
    return judge_call(r, facts, cfg);
  };
  // Nothing observed yet (a black hole from the start): the threshold alone.
  CHECK(judge(999ms, 0ms) == I);
  CHECK(judge(1000ms, 0ms) == F);
  CHECK(judge(3000ms, 0ms) == F);
  // A typical latency of 50 ms: the threshold still rules.
  CHECK(judge(900ms, 50ms) == I);
  CHECK(judge(1500ms, 50ms) == F);
  // A slow upstream (typical 2 s): silence counts only beyond 4 x 2 s.
  CHECK(silence_bound(cfg, 2000ms) == 8000ms);
  CHECK(judge(3000ms, 2000ms) == I);
  CHECK(judge(8000ms, 2000ms) == F);
  // Not capped: a timeout of the upstream's own attempt time is a failure.
  CHECK(judge(100ms, 2000ms, false) == F);
  // Off.
  cfg.silent_call_threshold = 0ms;
  CHECK(silence_bound(cfg, 2000ms).count() == 0);
  CHECK(judge(60000ms, 0ms) == I);
}

// -- breaker: the actor, in virtual time
// ---------------------------------------

namespace {

/// Stands in for the pool: records every view the breaker sends.
struct view_log {
  std::vector<breaker_view> views;
};

breaker_listener::behavior_type listener_fn(breaker_listener::pointer,
                                            std::shared_ptr<view_log> log) {
  return {
      [log](breaker_atom, breaker_view& v) {
        log->views.push_back(std::move(v));
      },
  };
}

breaker_outcome outcome(uint64_t epoch, call_verdict v, int64_t hint_ms = 0) {
  breaker_outcome out;
  out.epoch = epoch;
  out.verdict = v;
  out.retry_after_ms = hint_ms;
  out.what = "scripted";
  return out;
}

} // namespace

TEST_CASE("breaker actor: every transition in virtual time, with the epoch "
          "guard") {
  virtual_time vt;
  auto log = std::make_shared<view_log>();
  auto listener = vt.sys->spawn(listener_fn, log);
  auto env = std::make_shared<breaker_env>();
  env->upstream = "up";
  env->cfg = test_breaker_config();
  std::vector<std::pair<breaker_state, breaker_state>> events;
  env->on_transition
      = [&events](const std::string&, const breaker_transition& t) {
          events.emplace_back(t.from, t.to);
        };
  auto brk
      = vt.sys->spawn(breaker_actor_fn, std::shared_ptr<const breaker_env>{env},
                      listener.address(), std::optional<breaker_view>{});
  vt.sched->run();
  REQUIRE(log->views.size() == 1);
  CHECK(log->views[0].epoch == 1);
  CHECK(log->views[0].state == breaker_state::closed);
  // Outcomes of another epoch are stale: ignored.
  for (int i = 0; i < 5; ++i)
    caf::anon_send(brk, outcome_atom_v, outcome(0, F));
  vt.sched->run();
  CHECK(log->views.size() == 1);
  // Three failures of the current epoch open it for 1 s.
  for (int i = 0; i < 3; ++i)
    caf::anon_send(brk, outcome_atom_v, outcome(1, F));
  vt.sched->run();
  REQUIRE(log->views.size() == 2);
  auto open = log->views[1];
  CHECK(open.epoch == 2);
  CHECK(open.state == breaker_state::open);
  CHECK(open.open_for == caf::timespan{1000ms});
  CHECK(open.trips == 1);
  // Nothing happens before the open time is over ...
  vt.sched->advance_time(999ms);
  vt.sched->run();
  CHECK(log->views.size() == 2);
  // ... and exactly then it turns half-open with one probe permit.
  vt.sched->advance_time(1ms);
  vt.sched->run();
  REQUIRE(log->views.size() == 3);
  CHECK(log->views[2].state == breaker_state::half_open);
  CHECK(log->views[2].epoch == 3);
  CHECK(log->views[2].permits == 1);
  // An ignored probe gives its permit back (same epoch, one more permit).
  caf::anon_send(brk, outcome_atom_v, outcome(3, I));
  vt.sched->run();
  REQUIRE(log->views.size() == 4);
  CHECK(log->views[3].epoch == 3);
  CHECK(log->views[3].permits == 1);
  // The probe fails: open again for twice as long.
  caf::anon_send(brk, outcome_atom_v, outcome(3, F));
  vt.sched->run();
  REQUIRE(log->views.size() == 5);
  CHECK(log->views[4].state == breaker_state::open);
  CHECK(log->views[4].epoch == 4);
  // A stale timer (of the first open period) does not end this one.
  caf::anon_send(brk, half_open_atom_v, uint64_t{2});
  vt.sched->run();
  CHECK(log->views.size() == 5);
  vt.sched->advance_time(1999ms);
  vt.sched->run();
  CHECK(log->views.size() == 5);
  vt.sched->advance_time(1ms);
  vt.sched->run();
  REQUIRE(log->views.size() == 6);
  CHECK(log->views[5].state == breaker_state::half_open);
  // A successful probe closes it.
  caf::anon_send(brk, outcome_atom_v, outcome(5, S));
  vt.sched->run();
  REQUIRE(log->views.size() == 7);
  CHECK(log->views[6].state == breaker_state::closed);
  CHECK(log->views[6].epoch == 6);
  using bs = breaker_state;
  CHECK(events
        == std::vector<std::pair<bs, bs>>{{bs::closed, bs::open},
                                          {bs::open, bs::half_open},
                                          {bs::half_open, bs::open},
                                          {bs::open, bs::half_open},
                                          {bs::half_open, bs::closed}});
  // The health request reports the current view.
  caf::scoped_actor self{*vt.sys};
  auto h = self->request(brk, caf::infinite, health_atom_v);
  vt.sched->run();
  h.receive(
      [](breaker_view& v) {
        CHECK(v.state == breaker_state::closed);
        CHECK(v.epoch == 6);
      },
      [](caf::error& err) {
        FAIL(caf::to_string(err));
      });
  caf::anon_send_exit(brk, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(listener, caf::exit_reason::user_shutdown);
}

TEST_CASE("breaker actor: Retry-After sets the open time in virtual time") {
  virtual_time vt;
  auto log = std::make_shared<view_log>();
  auto listener = vt.sys->spawn(listener_fn, log);
  auto env = std::make_shared<breaker_env>();
  env->upstream = "up";
  env->cfg = test_breaker_config();
  auto brk
      = vt.sys->spawn(breaker_actor_fn, std::shared_ptr<const breaker_env>{env},
                      listener.address(), std::optional<breaker_view>{});
  vt.sched->run();
  for (int i = 0; i < 3; ++i)
    caf::anon_send(brk, outcome_atom_v, outcome(1, F, 4000));
  vt.sched->run();
  REQUIRE(log->views.size() == 2);
  CHECK(log->views[1].state == breaker_state::open);
  vt.sched->advance_time(3999ms);
  vt.sched->run();
  CHECK(log->views.size() == 2);
  vt.sched->advance_time(1ms);
  vt.sched->run();
  REQUIRE(log->views.size() == 3);
  CHECK(log->views[2].state == breaker_state::half_open);
  caf::anon_send_exit(brk, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(listener, caf::exit_reason::user_shutdown);
}

// -- breaker and pool
// -----------------------------------------------------------

namespace {

std::shared_ptr<pool_env>
make_breaker_pool_env(std::shared_ptr<fake_connections> fc,
                      uint32_t connections, uint32_t probes = 1) {
  auto env = make_pool_env(fc, connections);
  auto benv = std::make_shared<breaker_env>();
  benv->upstream = "fake";
  benv->cfg = test_breaker_config();
  benv->cfg.half_open_probes = probes;
  env->breaker = benv;
  env->retry.budget_min_retries = 100;
  return env;
}

} // namespace

TEST_CASE("pool and breaker: open fails fast with the time left, half-open "
          "lets only the permitted probes through, a good probe closes") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn,
      std::shared_ptr<const pool_env>{make_breaker_pool_env(fc, 4)});
  vt.sched->run();
  pool_caller c{*vt.sys};
  auto health_state = [&] {
    std::string state;
    auto h = c.self->request(pool, caf::infinite, health_atom_v);
    vt.sched->run();
    h.receive(
        [&](upstream_health& uh) {
          state = uh.state;
        },
        [](caf::error& err) {
          FAIL(caf::to_string(err));
        });
    return state;
  };
  CHECK(health_state() == "up");
  // Three upstream failures open the breaker.
  for (int i = 0; i < 3; ++i) {
    c.self->send(pool, call_atom_v, make_call("fail"));
    vt.sched->run();
  }
  auto failed = c.answers();
  REQUIRE(failed.size() == 3);
  for (auto& r : failed)
    CHECK(error_code(r.error) == errc::upstream_error);
  CHECK(health_state() == "breaker_open");
  auto calls_before = fc->calls.size();
  // While open: fail fast, nothing sent, time left in the error.
  vt.sched->advance_time(400ms);
  c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  auto rejected = c.answers();
  REQUIRE(rejected.size() == 1);
  CHECK(error_code(rejected[0].error) == errc::breaker_open);
  CHECK(error_retry_after(rejected[0].error) == 600ms);
  CHECK(fc->calls.size() == calls_before);
  // Half-open after 1 s: one probe goes out, the others fail fast.
  vt.sched->advance_time(600ms);
  vt.sched->run();
  CHECK(health_state() == "half_open");
  c.self->send(pool, call_atom_v, make_call("hold")); // the probe, held
  c.self->send(pool, call_atom_v, make_call("second"));
  c.self->send(pool, call_atom_v, make_call("third"));
  vt.sched->run();
  CHECK(fc->calls.size() == calls_before + 1);
  auto fast = c.answers();
  REQUIRE(fast.size() == 2);
  for (auto& r : fast)
    CHECK(error_code(r.error) == errc::breaker_open);
  // The probe succeeds: closed, calls flow again.
  fc->release(vt);
  vt.sched->run();
  auto probe = c.answers();
  REQUIRE(probe.size() == 1);
  CHECK(!probe[0].error);
  CHECK(health_state() == "up");
  for (int i = 0; i < 5; ++i)
    c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  auto ok = c.answers();
  REQUIRE(ok.size() == 5);
  for (auto& r : ok)
    CHECK(!r.error);
  fc->clear();
}

TEST_CASE("pool and breaker: calls queued when the breaker opens are "
          "answered at once, caller errors do not open it") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn,
      std::shared_ptr<const pool_env>{make_breaker_pool_env(fc, 1)});
  vt.sched->run();
  pool_caller c{*vt.sys};
  // Bad input (400) ten times: not the upstream's fault.
  for (int i = 0; i < 10; ++i)
    c.self->send(pool, call_atom_v, make_call("bad"));
  vt.sched->run();
  auto bad = c.answers();
  REQUIRE(bad.size() == 10);
  for (auto& r : bad)
    CHECK(error_code(r.error) == errc::invalid_input);
  // Two failures, then a third that completes while calls are queued.
  for (int i = 0; i < 2; ++i) {
    c.self->send(pool, call_atom_v, make_call("fail"));
    vt.sched->run();
  }
  REQUIRE(c.answers().size() == 2);
  c.self->send(pool, call_atom_v, make_call("hold"));
  vt.sched->run();
  for (int i = 0; i < 3; ++i)
    c.self->send(pool, call_atom_v, make_call("q" + std::to_string(i)));
  vt.sched->run();
  CHECK(c.answers().empty()); // queued behind the held call
  fc->release_fails = true;
  fc->release(vt);
  vt.sched->run();
  auto answers = c.answers();
  REQUIRE(answers.size() == 4); // each exactly once
  CHECK(error_code(answers[0].error) == errc::upstream_error);
  // Nothing is dispatched while the breaker judges the failure; its open
  // view then answers everything queued at once: no queued call reaches the
  // upstream after the threshold.
  for (std::size_t i = 1; i < answers.size(); ++i)
    CHECK(error_code(answers[i].error) == errc::breaker_open);
  // 10 bad, 2 failed, 1 held: nothing else was sent.
  CHECK(fc->calls.size() == 13);
  fc->clear();
}

TEST_CASE("pool: a batch refused as too large is re-batched under a learned "
          "token cap") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto env = make_pool_env(fc, 1);
  env->batching = true;
  env->retry.budget_min_retries = 100;
  fc->max_batch = 3;
  auto pool
      = vt.sys->spawn(pool_actor_fn, std::shared_ptr<const pool_env>{env});
  vt.sched->run();
  pool_caller c{*vt.sys};
  c.self->send(pool, call_atom_v, make_call("hold"));
  vt.sched->run();
  for (int i = 0; i < 8; ++i)
    c.self->send(pool, call_atom_v, make_call("t" + std::to_string(i)));
  vt.sched->run();
  fc->release(vt); // the 8 queued calls go out as one batch: too large
  vt.sched->run();
  auto answers = c.answers();
  REQUIRE(answers.size() == 9);
  for (auto& r : answers) {
    CHECK(!r.error);
    CHECK(r.embeddings.size() == 1);
  }
  // hold, 8 (refused), 4 (refused), then batches of at most 2.
  REQUIRE(fc->calls.size() >= 4);
  CHECK(fc->calls[1].size() == 8);
  CHECK(fc->calls[2].size() == 4);
  for (std::size_t i = 3; i < fc->calls.size(); ++i)
    CHECK(fc->calls[i].size() <= 3);
  fc->clear();
}

// -- request actor: bisection of a rejected batch
// --------------------------------

namespace {

/// A pool that rejects (400) every call containing an input starting with
/// "bad" and answers the others with vectors that encode the input text.
pool_actor::behavior_type judging_pool(pool_actor::pointer self,
                                       std::shared_ptr<int> calls) {
  return {
      [self, calls](call_atom, upstream_call& call) -> call_result {
        ++*calls;
        call_result r;
        for (auto& in : call.inputs)
          if (in.rfind("bad", 0) == 0) {
            r.error = make_error(errc::invalid_input,
                                 "upstream says " + in + " is bad", 400);
            return r;
          }
        for (auto& in : call.inputs)
          r.embeddings.push_back({static_cast<float>(std::stoi(in.substr(1)))});
        r.model = "m";
        return r;
      },
      [](health_atom) {
        return upstream_health{};
      },
  };
}

} // namespace

TEST_CASE("a 400 on a multi-input call is bisected: the reply names only the "
          "bad inputs, with the upstream's message") {
  virtual_time vt;
  auto calls = std::make_shared<int>(0);
  auto pool = vt.sys->spawn(judging_pool, calls);
  std::vector<std::string> inputs;
  for (int i = 0; i < 16; ++i)
    inputs.push_back(i == 5 || i == 11 ? "bad" + std::to_string(i)
                                       : "t" + std::to_string(i));
  auto req = spawn_request(vt, make_request_env(),
                           std::vector<route>{make_route(pool)}, uint64_t{1});
  caller c{*vt.sys};
  c.send(req, make_request(inputs));
  vt.sched->run();
  auto res = c.answer();
  REQUIRE(!res);
  CHECK(error_code(res.error()) == errc::invalid_input);
  CHECK(error_http_status(res.error()) == 400);
  auto detail = error_detail(res.error());
  CHECK(detail.find("inputs 5, 11 rejected by the upstream") == 0);
  CHECK(detail.find("upstream says bad5 is bad") != std::string::npos);
  // 1 + bisection of 16 with two bad leaves: far fewer than one per input.
  CHECK(*calls <= 1 + 2 * 2 * 4);
  // Without bad inputs: one call, vectors in order.
  for (int i = 0; i < 16; ++i)
    inputs[i] = "t" + std::to_string(i);
  auto req2 = spawn_request(vt, make_request_env(),
                            std::vector<route>{make_route(pool)}, uint64_t{1});
  *calls = 0;
  c.send(req2, make_request(inputs));
  vt.sched->run();
  auto ok = c.answer();
  REQUIRE(ok);
  CHECK(*calls == 1);
  for (int i = 0; i < 16; ++i)
    CHECK(ok->embeddings[i][0] == static_cast<float>(i));
}

TEST_CASE("pool and breaker: work handed back by a dying connection while "
          "the breaker is open is answered at once") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn,
      std::shared_ptr<const pool_env>{make_breaker_pool_env(fc, 2)});
  vt.sched->run();
  pool_caller c{*vt.sys};
  c.self->send(pool, call_atom_v, make_call("hold"));
  vt.sched->run();
  for (int i = 0; i < 3; ++i) {
    c.self->send(pool, call_atom_v, make_call("fail"));
    vt.sched->run();
  }
  REQUIRE(c.answers().size() == 3); // the breaker is open now
  // Both connections die; the held call comes back to the pool.
  auto conns = fc->conns;
  for (auto& conn : conns)
    caf::anon_send_exit(conn, caf::exit_reason::kill);
  vt.sched->run();
  auto answers = c.answers();
  REQUIRE(answers.size() == 1);
  CHECK(error_code(answers[0].error) == errc::breaker_open);
  fc->clear();
}

// -- supervision: no promise left behind ------------------------------------

TEST_CASE("pool stopped with calls held: every queued and in-flight call is "
          "answered cancelled at once") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 2)});
  vt.sched->run();
  pool_caller c{*vt.sys};
  // Two calls in flight (held by both connections), five queued.
  c.self->send(pool, call_atom_v, make_call("hold"));
  c.self->send(pool, call_atom_v, make_call("hold"));
  for (int i = 0; i < 5; ++i)
    c.self->send(pool, call_atom_v, make_call("q" + std::to_string(i)));
  vt.sched->run();
  REQUIRE(fc->calls.size() == 2);
  REQUIRE(c.answers().empty());
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
  vt.sched->run();
  auto answers = c.answers();
  REQUIRE(answers.size() == 7);
  for (auto& r : answers)
    CHECK(error_code(r.error) == errc::cancelled);
  fc->clear();
}

TEST_CASE("pool killed or crashed with calls held: every call is answered "
          "upstream_down at once (callers fail over)") {
  for (bool crash : {false, true}) {
    INFO((crash ? "exception in a handler" : "killed"));
    virtual_time vt;
    auto fc = std::make_shared<fake_connections>();
    auto env = make_pool_env(fc, 1);
    env->crash_marker = "__crash_pool__";
    auto pool
        = vt.sys->spawn(pool_actor_fn, std::shared_ptr<const pool_env>{env});
    vt.sched->run();
    pool_caller c{*vt.sys};
    c.self->send(pool, call_atom_v, make_call("hold"));
    for (int i = 0; i < 20; ++i)
      c.self->send(pool, call_atom_v, make_call("q" + std::to_string(i)));
    vt.sched->run();
    REQUIRE(c.answers().empty());
    if (!crash) {
      caf::anon_send_exit(pool, caf::exit_reason::kill);
      vt.sched->run();
    } else {
      // Sent as request actors send it: CAF answers the request that threw
      // with the exception handler's error (the request actor treats any
      // non-embedrt error of its pool as upstream_down); the 21 held calls
      // are answered by the pool itself.
      auto crashing = c.self->request(pool, caf::infinite, call_atom_v,
                                      make_call("__crash_pool__"));
      vt.sched->run();
      bool crash_answered = false;
      crashing.receive(
          [&](call_result&) {
            FAIL("the crashing call was answered with a result");
          },
          [&](caf::error& err) {
            crash_answered = true;
            CHECK(err == caf::exit_reason::unhandled_exception);
          });
      CHECK(crash_answered);
    }
    auto answers = c.answers();
    REQUIRE(answers.size() == 21u);
    std::size_t down = 0;
    for (auto& r : answers)
      down += error_code(r.error) == errc::upstream_down ? 1 : 0;
    CHECK(down == 21);
    fc->clear();
  }
}

TEST_CASE("pool: a connection killed while busy leaves nothing pending, its "
          "late answer is ignored and the call answered once") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 1)});
  vt.sched->run();
  pool_caller c{*vt.sys};
  c.self->send(pool, call_atom_v, make_call("hold"));
  vt.sched->run();
  REQUIRE(fc->held.size() == 1);
  auto stale = fc->held.front();
  // Ten kills of the connection holding the call: each time it is
  // re-queued (up to the crash limit of 2, then answered
  // connection_failed); nothing else is left in the pool.
  for (int round = 0; round < 3; ++round) {
    auto conns = fc->conns;
    fc->conns.clear();
    for (auto& conn : conns)
      caf::anon_send_exit(conn, caf::exit_reason::kill);
    vt.sched->run();
    while (vt.sched->trigger_timeout()) // restart backoff
      vt.sched->run();
  }
  auto answers = c.answers();
  REQUIRE(answers.size() == 1);
  CHECK(error_code(answers[0].error) == errc::connection_failed);
  // A result for the dead call (its old id) arriving late changes nothing.
  call_result late = ok_result(1);
  late.call_id = stale.call_id;
  caf::anon_send(caf::actor_cast<connection_listener>(stale.reply_to),
                 result_atom_v, late);
  vt.sched->run();
  CHECK(c.answers().empty());
  // The pool works: a fresh call is answered.
  c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  auto fine = c.answers();
  REQUIRE(fine.size() == 1);
  CHECK(!fine[0].error);
  fc->clear();
}

TEST_CASE("pool: the watchdog moves earlier for a call with a shorter "
          "deadline (a stuck call is caught at its own time)") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto pool = vt.sys->spawn(
      pool_actor_fn, std::shared_ptr<const pool_env>{make_pool_env(fc, 2)});
  vt.sched->run();
  pool_caller c{*vt.sys};
  auto t0 = vt.now();
  // First a call with no deadline: stuck at 10 s attempt timeout + 2 s.
  c.self->send(pool, call_atom_v, make_call("hold"));
  vt.sched->run();
  // Then one whose caller has 1 s left: its attempt is capped at 1 s, so it
  // is stuck at 1 s + 2 s, before the armed watchdog.
  auto short_call = make_call("hold");
  short_call.budget = caf::timespan{1000ms};
  c.self->send(pool, call_atom_v, short_call);
  vt.sched->run();
  REQUIRE(fc->calls.size() == 2);
  REQUIRE(fc->spawned == 2);
  REQUIRE(vt.sched->trigger_timeout());
  CHECK(vt.now() - t0 == 3000ms);
  vt.sched->run();
  // The second connection was killed (its call comes back: answered
  // deadline_exceeded at once, its deadline having passed).
  REQUIRE(vt.sched->trigger_timeout()); // its restart
  vt.sched->run();
  CHECK(fc->spawned == 3);
  auto answers = c.answers();
  REQUIRE(answers.size() == 1);
  CHECK(error_code(answers[0].error) == errc::deadline_exceeded);
  // The first call is still held by a connection: stopping the pool answers
  // it cancelled.
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
  vt.sched->run();
  auto last = c.answers();
  REQUIRE(last.size() == 1);
  CHECK(error_code(last[0].error) == errc::cancelled);
  fc->clear();
}

TEST_CASE("pool and breaker: a breaker that dies while open comes back "
          "open until its time, then half-open") {
  virtual_time vt;
  auto fc = std::make_shared<fake_connections>();
  auto env = make_breaker_pool_env(fc, 1);
  std::vector<breaker_actor> breakers;
  env->on_breaker_spawned = [&](const breaker_actor& b) {
    breakers.push_back(b);
  };
  auto pool
      = vt.sys->spawn(pool_actor_fn, std::shared_ptr<const pool_env>{env});
  vt.sched->run();
  REQUIRE(breakers.size() == 1);
  pool_caller c{*vt.sys};
  for (int i = 0; i < 3; ++i) {
    c.self->send(pool, call_atom_v, make_call("fail"));
    vt.sched->run();
  }
  REQUIRE(c.answers().size() == 3); // open for 1 s
  vt.sched->advance_time(300ms);
  caf::anon_send_exit(breakers.front(), caf::exit_reason::kill);
  vt.sched->run();
  REQUIRE(breakers.size() == 2); // replaced at once
  // Still open, with the time left of the dead breaker's open period.
  c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  auto rejected = c.answers();
  REQUIRE(rejected.size() == 1);
  CHECK(error_code(rejected[0].error) == errc::breaker_open);
  CHECK(error_retry_after(rejected[0].error) == 700ms);
  auto sent = fc->calls.size();
  // At its time it turns half-open: one probe goes out and closes it.
  vt.sched->advance_time(700ms);
  vt.sched->run();
  c.self->send(pool, call_atom_v, make_call("fine"));
  vt.sched->run();
  CHECK(fc->calls.size() == sent + 1);
  auto probe = c.answers();
  REQUIRE(probe.size() == 1);
  CHECK(!probe[0].error);
  breakers.clear();
  fc->clear();
}

TEST_CASE("request actor: an exception answers the caller cancelled, once") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  auto pool = vt.sys->spawn(scripted_pool, script);
  auto env = make_request_env();
  env->crash_marker = "__crash_request__";
  auto req = spawn_request(vt, std::shared_ptr<const request_env>{env},
                           std::vector<route>{make_route(pool)}, uint64_t{1});
  caller c{*vt.sys};
  c.send(req, make_request({"a", "__crash_request__"}));
  vt.sched->run();
  auto res = c.answer(); // exactly one answer
  REQUIRE(!res);
  CHECK(error_code(res.error()) == errc::cancelled);
  CHECK(script->arrivals.empty()); // nothing was sent upstream
}

// -- one request actor serves requests in turn (the service reuses them) ----

namespace {

/// A scripted pool whose held calls the test answers later:
/// `(index into script->held, result)`.
using holding_pool_actor
    = pool_actor::extend<caf::reacts_to<uint32_t, call_result>>;

holding_pool_actor::behavior_type
holding_pool(holding_pool_actor::pointer self,
             std::shared_ptr<pool_script> script) {
  return {
      [self, script](call_atom,
                     upstream_call& call) -> caf::result<call_result> {
        return scripted_answer(self, *script, call);
      },
      [](health_atom) {
        return upstream_health{};
      },
      [script](uint32_t i, call_result& r) {
        script->held.at(i).deliver(std::move(r));
      },
  };
}

/// A route whose upstream takes one input per call: two inputs are two
/// chunks, two calls.
route one_input_route(const pool_actor& pool) {
  auto rt = make_route(pool);
  rt.profile.max_inputs = 1;
  return rt;
}

} // namespace

TEST_CASE("request actor reused: a late pool answer for the previous request "
          "does not reach the next one") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  // Request 1: chunk 0 held, chunk 1 fails for good (request 1 is answered
  // with chunk 0 still out). Request 2: both chunks held.
  script->steps = {{std::nullopt},
                   {err_result(errc::auth_failed, false)},
                   {std::nullopt},
                   {std::nullopt}};
  auto pool = vt.sys->spawn(holding_pool, script);
  auto req = spawn_request(
      vt, make_request_env(),
      std::vector<route>{one_input_route(caf::actor_cast<pool_actor>(pool))},
      uint64_t{1});
  caller c{*vt.sys};
  c.send(req, make_request({"a", "b"}));
  vt.sched->run();
  auto first = c.answer();
  REQUIRE(!first);
  CHECK(error_code(first.error()) == errc::auth_failed);
  c.send(req, make_request({"x", "y"}));
  vt.sched->run();
  REQUIRE(script->arrivals.size() == 4);
  REQUIRE(script->held.size() == 3);
  // Request 1's chunk 0 answers now, with vectors request 2 must not get.
  c.self->send(pool, uint32_t{0}, ok_result(1, 100.0f));
  vt.sched->run();
  CHECK(c.self->mailbox().empty());
  c.self->send(pool, uint32_t{1}, ok_result(1, 7.0f));
  c.self->send(pool, uint32_t{2}, ok_result(1, 8.0f));
  vt.sched->run();
  auto second = c.answer();
  REQUIRE(second);
  REQUIRE(second->embeddings.size() == 2);
  CHECK(second->embeddings[0][0] == 7.0f);
  CHECK(second->embeddings[1][0] == 8.0f);
  CHECK(second->usage.prompt_tokens == 2);
}

TEST_CASE("request actor reused: a retry timer of the previous request does "
          "not send for the next one") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  // Request 1: chunk 0 fails retryably (a retry timer is set), chunk 1 for
  // good. Request 2: its one chunk fails retryably once (its own timer),
  // then succeeds.
  script->steps = {{err_result(errc::upstream_error, true)},
                   {err_result(errc::auth_failed, false)},
                   {err_result(errc::upstream_error, true)}};
  auto pool = vt.sys->spawn(scripted_pool, script);
  auto req
      = spawn_request(vt, make_request_env(),
                      std::vector<route>{one_input_route(pool)}, uint64_t{1});
  caller c{*vt.sys};
  c.send(req, make_request({"a", "b"}));
  vt.sched->run();
  auto first = c.answer();
  REQUIRE(!first);
  CHECK(error_code(first.error()) == errc::auth_failed);
  c.send(req, make_request({"x"}));
  vt.sched->run();
  REQUIRE(script->arrivals.size() == 3);
  // Both timers fire before the actor runs: request 1's (stale, same chunk
  // index) and request 2's. Only request 2's may send.
  REQUIRE(vt.sched->trigger_timeout());
  REQUIRE(vt.sched->trigger_timeout());
  vt.sched->run();
  CHECK(script->arrivals.size() == 4);
  auto second = c.answer();
  REQUIRE(second);
  REQUIRE(second->embeddings.size() == 1);
  CHECK(script->retry_flags == std::vector<bool>{false, false, false, true});
}

TEST_CASE("request actor: a request sent while one is in progress is "
          "answered overloaded, the first goes on") {
  virtual_time vt;
  auto script = std::make_shared<pool_script>();
  script->steps = {{std::nullopt}};
  auto pool = vt.sys->spawn(holding_pool, script);
  auto req = spawn_request(
      vt, make_request_env(),
      std::vector<route>{make_route(caf::actor_cast<pool_actor>(pool))},
      uint64_t{1});
  caller c{*vt.sys};
  caller other{*vt.sys};
  c.send(req, make_request({"a"}));
  vt.sched->run();
  other.send(req, make_request({"b"}));
  vt.sched->run();
  auto refused = other.answer();
  REQUIRE(!refused);
  CHECK(error_code(refused.error()) == errc::overloaded);
  CHECK(c.self->mailbox().empty());
  c.self->send(pool, uint32_t{0}, ok_result(1, 3.0f));
  vt.sched->run();
  auto res = c.answer();
  REQUIRE(res);
  CHECK(res->embeddings[0][0] == 3.0f);
}
