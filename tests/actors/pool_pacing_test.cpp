// The pool's pacing and adaptive concurrency (pool_pacing.hpp) in virtual
// time, with scripted connections: a batch held back until the upstream's
// tokens refill (one pacing timer), admission that knows the pacing delay,
// the limit of calls in flight falling under 429s and rising again.
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/provider.hpp"
#include "embedrt/protocol/type_ids.hpp"
#include "embedrt/service.hpp"
#include "pool_actor.hpp"
#include "virtual_time.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <memory>
#include <vector>

using namespace embedrt;
using namespace embedrt::detail;
using namespace std::chrono_literals;

using embedrt::testing::virtual_time;

namespace {

/// The upstream behind the scripted connections: holds every call until the
/// test answers it, and says what it was sent.
struct fake_upstream {
  struct held {
    connection_listener to;
    uint64_t call_id;
    std::size_t inputs;
  };
  std::vector<held> calls;
  std::vector<std::size_t> sent_inputs;
};

std::shared_ptr<pool_env> make_env(std::shared_ptr<fake_upstream> up,
                                   uint32_t connections) {
  auto env = std::make_shared<pool_env>();
  env->cfg.name = "fake";
  env->cfg.connections = connections;
  env->profile = profile_for(provider_kind::openai);
  env->batching = true;
  env->connection_behavior
      = [up](connection_impl::pointer self) -> connection_impl::behavior_type {
    return {
        [self, up](call_atom, connection_call& call) {
          up->sent_inputs.push_back(call.inputs.size());
          up->calls.push_back(fake_upstream::held{
              caf::actor_cast<connection_listener>(self->current_sender()),
              call.call_id, call.inputs.size()});
        },
        [](io_done_atom, http_outcome&) {},
    };
  };
  return env;
}

/// Answers every held call with `r` (vectors added on success), 10 ms
/// after they were sent.
void answer_all(virtual_time& vt, fake_upstream& up, const call_result& r) {
  vt.sched->advance_time(10ms);
  vt.sched->run();
  auto calls = std::move(up.calls);
  up.calls.clear();
  for (auto& c : calls) {
    auto out = r;
    out.call_id = c.call_id;
    if (!out.error)
      out.embeddings.assign(c.inputs, std::vector<float>{1.0f});
    caf::anon_send(c.to, result_atom_v, std::move(out));
  }
  vt.sched->run();
}

call_result ok(int64_t upstream_ms = 10) {
  call_result r;
  r.upstream_ns = upstream_ms * 1'000'000;
  return r;
}

call_result too_many() {
  call_result r;
  r.error = make_error(errc::rate_limited, "429", 429);
  r.retryable = true;
  r.upstream_ns = 1'000'000;
  return r;
}

upstream_call make_call(int64_t tokens, caf::timespan budget = {}) {
  upstream_call call;
  call.model = "m";
  call.inputs = {"text"};
  call.tokens = tokens;
  call.budget = budget;
  return call;
}

pool_impl spawn_pool(virtual_time& vt, std::shared_ptr<pool_env> env) {
  return vt.sys->spawn(pool_actor_fn,
                       std::shared_ptr<const pool_env>{std::move(env)});
}

upstream_health health_of(virtual_time& vt, const pool_impl& pool) {
  caf::scoped_actor self{*vt.sys};
  auto h = self->request(pool, caf::infinite, health_atom_v);
  vt.sched->run();
  upstream_health out;
  h.receive(
      [&](upstream_health& x) {
        out = std::move(x);
      },
      [](caf::error& err) {
        FAIL(caf::to_string(err));
      });
  return out;
}

/// Callers whose answers are counted.
struct callers {
  int ok = 0;
  std::vector<errc> errors;

  void send(virtual_time& vt, const pool_impl& pool, upstream_call call) {
    auto* self = this;
    // What the caller needs goes in as spawn arguments (CAF 0.17.6 binds a
    // reference to a null argument tuple when there are none: UBSan).
    vt.sys->spawn(
        [](caf::event_based_actor* a, callers* self, const pool_impl& pool,
           const upstream_call& call) {
          a->request(pool, caf::infinite, call_atom_v, call)
              .then([self](call_result& r) {
                if (r.error)
                  self->errors.push_back(error_code(r.error));
                else
                  ++self->ok;
              });
        },
        self, pool, std::move(call));
    vt.sched->run();
  }
};

} // namespace

TEST_CASE("pacing holds a batch until the configured tokens refill, then "
          "sends what queued meanwhile in one call") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto env = make_env(up, 4);
  env->cfg.tpm = 600; // 10 tokens per second, 600 at the start
  auto pool = spawn_pool(vt, std::move(env));
  callers c;
  c.send(vt, pool, make_call(300));
  c.send(vt, pool, make_call(300));
  REQUIRE(up->calls.size() == 2);
  answer_all(vt, *up, ok());
  // The bucket is empty (0.1 token refilled during the answers' 10 ms):
  // the front's 20 tokens are there 2 s later, one timer wakes the pool.
  for (int i = 0; i < 5; ++i)
    c.send(vt, pool, make_call(20));
  CHECK(up->calls.empty());
  CHECK(health_of(vt, pool).pacing_holds == 1);
  vt.sched->advance_time(1980ms);
  vt.sched->run();
  CHECK(up->calls.empty());
  vt.sched->advance_time(10ms);
  vt.sched->run();
  CHECK(up->calls.size() == 1);
  // The others go as their tokens come.
  vt.sched->advance_time(8000ms);
  vt.sched->run();
  answer_all(vt, *up, ok());
  CHECK(c.ok == 7);
  CHECK(c.errors.empty());
  auto h = health_of(vt, pool);
  CHECK(h.pacing_holds >= 1);
  CHECK(h.pacing_held_ns >= 2'000'000'000);
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE("pacing: another client's use of the key shows in the pool's "
          "health") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto pool = spawn_pool(vt, make_env(up, 4));
  CHECK(health_of(vt, pool).pacing_others_tpm == 0);
  CHECK(health_of(vt, pool).pacing_others_rpm == 0);
  // The upstream: 60,000 tokens per minute (100 per 100 ms) and 3,000
  // requests (5 per 100 ms), both below half full; every 100 ms the pool
  // sends one call of 60 tokens and another client of the key one of 25,
  // which only the remaining counts of each answer show.
  double remaining = 20'000.0;
  double remaining_requests = 1'000.0;
  callers c;
  for (int i = 0; i < 40; ++i) {
    c.send(vt, pool, make_call(60));
    REQUIRE(up->calls.size() == 1);
    remaining += 100.0 - 60.0 - 25.0;
    remaining_requests += 5.0 - 1.0 - 1.0;
    auto r = ok();
    r.ratelimit_limit_tokens = 60'000;
    r.ratelimit_remaining_tokens = static_cast<int64_t>(remaining);
    r.ratelimit_limit_requests = 3'000;
    r.ratelimit_remaining_requests = static_cast<int64_t>(remaining_requests);
    answer_all(vt, *up, r); // 10 ms
    vt.sched->advance_time(90ms);
    vt.sched->run();
  }
  CHECK(c.ok == 40);
  // 25 tokens and one request per 100 ms: 15,000 and 600 per minute.
  auto h = health_of(vt, pool);
  CHECK(static_cast<double>(h.pacing_others_tpm)
        == Approx(15'000.0).epsilon(0.05));
  CHECK(static_cast<double>(h.pacing_others_rpm)
        == Approx(600.0).epsilon(0.05));
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE("pacing: a health check the upstream answered counts against the "
          "configured rpm, a failed one does not") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto env = make_env(up, 4);
  env->cfg.rpm = 2; // 2 requests at the start, then one per 30 s
  auto pool = spawn_pool(vt, std::move(env));
  // The checker's verdicts: one check the upstream never answered (not
  // counted), one it answered (counted: one request of the two left).
  caf::anon_send(pool, checked_atom_v, false, std::string{"refused"});
  caf::anon_send(pool, checked_atom_v, true, std::string{});
  vt.sched->run();
  callers c;
  c.send(vt, pool, make_call(1));
  c.send(vt, pool, make_call(1));
  CHECK(up->calls.size() == 1);
  CHECK(health_of(vt, pool).pacing_holds == 1);
  answer_all(vt, *up, ok());
  // The second call goes when the bucket has refilled one request.
  vt.sched->advance_time(29s);
  vt.sched->run();
  CHECK(up->calls.empty());
  vt.sched->advance_time(1s);
  vt.sched->run();
  CHECK(up->calls.size() == 1);
  answer_all(vt, *up, ok());
  CHECK(c.ok == 2);
  CHECK(c.errors.empty());
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE("pacing: calls queued while held go out as one batch when the "
          "bucket has room for them") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto env = make_env(up, 4);
  env->cfg.tpm = 600;
  auto pool = spawn_pool(vt, std::move(env));
  callers c;
  c.send(vt, pool, make_call(600));
  answer_all(vt, *up, ok());
  for (int i = 0; i < 5; ++i)
    c.send(vt, pool, make_call(10));
  CHECK(up->calls.empty());
  // 10 tokens after 1 s: the front goes alone.
  vt.sched->advance_time(1000ms);
  vt.sched->run();
  REQUIRE(up->sent_inputs.size() == 2);
  CHECK(up->sent_inputs.back() == 1);
  // 40 tokens 4 s later: the four left go together.
  vt.sched->advance_time(4000ms);
  vt.sched->run();
  REQUIRE(up->sent_inputs.size() == 3);
  CHECK(up->sent_inputs.back() == 4);
  answer_all(vt, *up, ok());
  CHECK(c.ok == 6);
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE("pacing from the upstream's headers, and admission that knows the "
          "pacing delay") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto pool = spawn_pool(vt, make_env(up, 4));
  callers c;
  c.send(vt, pool, make_call(100));
  auto r = ok();
  r.ratelimit_limit_tokens = 6000; // 100 tokens per second
  r.ratelimit_remaining_tokens = 0;
  r.ratelimit_reset_tokens_ns = 60'000'000'000;
  answer_all(vt, *up, r);
  // 200 tokens: 2 s away; a caller with 1 s left is refused at once.
  c.send(vt, pool, make_call(200, 1s));
  REQUIRE(c.errors.size() == 1);
  CHECK(c.errors[0] == errc::overloaded);
  c.send(vt, pool, make_call(200, 5s));
  CHECK(c.errors.size() == 1);
  vt.sched->advance_time(1999ms);
  vt.sched->run();
  CHECK(up->calls.empty());
  vt.sched->advance_time(1ms);
  vt.sched->run();
  CHECK(up->calls.size() == 1);
  answer_all(vt, *up, ok());
  CHECK(c.ok == 2);
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE("pacing off: the same headers hold nothing") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto env = make_env(up, 4);
  env->cfg.pacing = false;
  env->cfg.tpm = 600;
  auto pool = spawn_pool(vt, std::move(env));
  callers c;
  c.send(vt, pool, make_call(600));
  auto r = ok();
  r.ratelimit_limit_tokens = 600;
  r.ratelimit_remaining_tokens = 0;
  answer_all(vt, *up, r);
  c.send(vt, pool, make_call(600));
  CHECK(up->calls.size() == 1);
  CHECK(health_of(vt, pool).pacing_holds == 0);
  answer_all(vt, *up, ok());
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE("adaptive concurrency: 429s lower the calls in flight, successes "
          "raise them again") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto env = make_env(up, 8);
  env->batching = false;
  env->cfg.adaptive_concurrency = true;
  env->cfg.min_connections = 1;
  env->cfg.pacing = false;
  auto pool = spawn_pool(vt, std::move(env));
  callers c;
  CHECK(health_of(vt, pool).concurrency_limit == 8);
  for (int i = 0; i < 20; ++i)
    c.send(vt, pool, make_call(1));
  CHECK(up->calls.size() == 8);
  // All eight come back 429: one decrease (they saw the same limit).
  answer_all(vt, *up, too_many());
  CHECK(health_of(vt, pool).concurrency_limit == 4);
  CHECK(up->calls.size() == 4);
  answer_all(vt, *up, too_many());
  CHECK(health_of(vt, pool).concurrency_limit == 2);
  CHECK(up->calls.size() == 2);
  answer_all(vt, *up, too_many());
  CHECK(health_of(vt, pool).concurrency_limit == 1);
  CHECK(up->calls.size() == 1);
  // Counted by cause (the metric embedrt_concurrency_limit_decreases_total).
  CHECK(health_of(vt, pool).limit_decreases_overload == 3);
  CHECK(health_of(vt, pool).limit_decreases_latency == 0);
  // The upstream recovers: the limit climbs back while calls wait.
  for (int i = 0; i < 40; ++i)
    c.send(vt, pool, make_call(1));
  uint32_t peak = 0;
  for (int round = 0; round < 20 && !up->calls.empty(); ++round) {
    peak = std::max<uint32_t>(peak, static_cast<uint32_t>(up->calls.size()));
    answer_all(vt, *up, ok());
  }
  CHECK(peak == 8);
  CHECK(health_of(vt, pool).concurrency_limit == 8);
  CHECK(c.ok + static_cast<int>(c.errors.size()) == 60);
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}

TEST_CASE("adaptive concurrency off: the limit is the connections") {
  virtual_time vt;
  auto up = std::make_shared<fake_upstream>();
  auto pool = spawn_pool(vt, make_env(up, 3));
  callers c;
  for (int i = 0; i < 3; ++i)
    c.send(vt, pool, make_call(1));
  answer_all(vt, *up, too_many());
  CHECK(health_of(vt, pool).concurrency_limit == 3);
  caf::anon_send_exit(pool, caf::exit_reason::user_shutdown);
}
