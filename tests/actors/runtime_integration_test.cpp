// Integration tests of the whole runtime over real sockets: the service,
// request, pool and connection actors against the built-in upstream
// (`embedrt mock`, run in-process on its own I/O threads on 127.0.0.1).
#include "embedrt/all.hpp"
#include "embedrt/protocol/hash_embedder.hpp"
#include "integration_fixture.hpp"
#include "mock/mock_server.hpp"

#include <atomic>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <dirent.h>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace embedrt;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

/// Grace allowed on top of a deadline on this shared, noisy machine.
constexpr auto deadline_grace = 250ms;

std::size_t thread_count() {
  std::size_t n = 0;
  if (auto* dir = opendir("/proc/self/task")) {
    while (auto* e = readdir(dir))
      if (e->d_name[0] != '.')
        ++n;
    closedir(dir);
  }
  return n;
}

using test::start_mock;
using test::system_fixture;

runtime_config make_config(const std::string& url, uint32_t connections = 8) {
  runtime_config rc;
  upstream_config up;
  up.name = "mock";
  up.base_url = url;
  up.connections = connections;
  up.attempt_timeout = 2000ms;
  // These tests pin retries and the error mapping at 30-100 % faults; the
  // breaker (which would fail such callers fast) has its own tests.
  up.breaker.enabled = false;
  rc.upstreams.push_back(up);
  rc.default_timeout = 10000ms;
  rc.retry.max_attempts = 8;
  rc.retry.backoff_base = 5ms;
  rc.retry.backoff_cap = 50ms;
  rc.retry.budget_ratio = 1.0;
  rc.seed = 7;
  return rc;
}

embed_request make_request(std::vector<std::string> inputs, int32_t dims = 16,
                           caf::timespan timeout = caf::timespan{0}) {
  embed_request req;
  req.model = "test-model";
  req.inputs = std::move(inputs);
  req.dimensions = dims;
  req.timeout = timeout;
  return req;
}

/// One call through the facade, with the time it took.
struct timed_result {
  caf::expected<embed_result> result{caf::error{}};
  steady::duration took{};
};

std::vector<timed_result> embed_concurrently(client& c,
                                             std::vector<embed_request> reqs) {
  std::vector<std::future<caf::expected<embed_result>>> futs;
  std::vector<steady::time_point> starts;
  for (auto& r : reqs) {
    starts.push_back(steady::now());
    futs.push_back(c.embed(std::move(r)));
  }
  std::vector<timed_result> out(futs.size());
  for (std::size_t i = 0; i < futs.size(); ++i) {
    out[i].result = futs[i].get();
    out[i].took = steady::now() - starts[i];
  }
  return out;
}

bool vector_matches(const std::vector<float>& got, const std::string& text,
                    std::size_t dims) {
  auto want = hash_embed(text, dims);
  return got == want;
}

} // namespace

namespace {

/// 5, 100 and 1000 concurrent callers against a service on `sys`: each gets
/// its own vectors, no thread is added, the connections are reused.
void check_concurrent_callers(caf::actor_system& sys) {
  auto srv = start_mock();
  auto svc = spawn_service(sys, make_config(srv->base_url(), 8));
  REQUIRE(svc);
  client c{sys, *svc};
  // Warm-up: all connections opened, all threads started.
  {
    std::vector<embed_request> warm;
    for (int i = 0; i < 16; ++i)
      warm.push_back(make_request({"warm " + std::to_string(i)}));
    for (auto& r : embed_concurrently(c, std::move(warm)))
      REQUIRE(r.result);
  }
  srv->reset_stats();
  auto threads_before = thread_count();
  std::size_t total = 0;
  for (int callers : {5, 100, 1000}) {
    std::vector<embed_request> reqs;
    std::vector<std::string> texts;
    for (int i = 0; i < callers; ++i) {
      texts.push_back("caller " + std::to_string(callers) + " text "
                      + std::to_string(i) + " about topic "
                      + std::to_string(i % 7));
      reqs.push_back(make_request({texts.back()}, 32));
    }
    auto results = embed_concurrently(c, std::move(reqs));
    auto threads_during = thread_count();
    CHECK(threads_during == threads_before);
    REQUIRE(results.size() == texts.size());
    for (std::size_t i = 0; i < results.size(); ++i) {
      auto& r = results[i].result;
      REQUIRE(r);
      REQUIRE(r->embeddings.size() == 1);
      CHECK(vector_matches(r->embeddings[0], texts[i], 32));
      CHECK(results[i].took <= 10000ms + deadline_grace);
    }
    total += static_cast<std::size_t>(callers);
  }
  CHECK(thread_count() == threads_before);
  auto st = srv->stats();
  // After warm-up no new connection was needed: reuse >= 99 %.
  INFO("connections accepted " << st.connections_accepted << " for "
                               << st.embedding_requests << " requests");
  CHECK(st.embedding_requests > 0);
  CHECK(st.embedding_requests <= total);
  double reuse = 1.0
      - static_cast<double>(st.connections_accepted)
          / static_cast<double>(st.embedding_requests);
  CHECK(reuse >= 0.99);
  auto health = c.health();
  REQUIRE(health);
  CHECK(health->ready);
  REQUIRE(health->upstreams.size() == 1);
  CHECK(health->upstreams[0].state == "up");
  CHECK(health->upstreams[0].connections == 8);
  caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
}

} // namespace

TEST_CASE("5, 100 and 1000 concurrent callers each get their own vectors") {
  system_fixture f;
  check_concurrent_callers(*f.sys);
}

TEST_CASE("on the actor workers' I/O, 5, 100 and 1000 concurrent callers each "
          "get their own vectors") {
  // The sockets run on CAF's workers (what `embedrt serve` does by default):
  // the service finds the io_runtime through the actor system.
  for (std::size_t workers : {1, 2}) {
    INFO(workers << " workers");
    auto io = std::make_shared<io_runtime>(io_runtime::on_actor_workers);
    caf::actor_system_config cfg;
    register_types(cfg);
    cfg.set("scheduler.max-threads", workers);
    run_on_actor_workers(cfg, io);
    caf::actor_system sys{cfg};
    REQUIRE(io_runtime_of(sys) == io);
    check_concurrent_callers(sys);
  }
}

TEST_CASE("multi-input requests keep their order") {
  system_fixture f;
  auto srv = start_mock();
  auto svc = spawn_service(*f.sys, make_config(srv->base_url(), 4));
  REQUIRE(svc);
  client c{*f.sys, *svc};
  std::vector<std::string> texts;
  for (int i = 0; i < 300; ++i)
    texts.push_back("input number " + std::to_string(i));
  auto start = steady::now();
  auto r = c.embed(make_request(texts, 8, 10000ms)).get();
  CHECK(steady::now() - start <= 10000ms + deadline_grace);
  REQUIRE(r);
  REQUIRE(r->embeddings.size() == texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i)
    CHECK(vector_matches(r->embeddings[i], texts[i], 8));
  CHECK(r->usage.prompt_tokens > 0);
  CHECK(r->upstream == "mock");
}

TEST_CASE("retryable faults are retried until they succeed") {
  // Each kind at 30 % (seeded): 8 attempts make a residual failure chance of
  // 0.3^8 per request.
  for (std::string kind : {"500", "503", "429", "reset", "malformed", "baddims",
                           "nan", "close", "hang"}) {
    DYNAMIC_SECTION("fault " << kind) {
      system_fixture f;
      mock::mock_options opts;
      opts.faults = *mock::parse_fault_spec(kind + ":0.3").value;
      opts.seed = 11;
      auto srv = start_mock(opts);
      auto rc = make_config(srv->base_url(), 4);
      rc.upstreams[0].attempt_timeout = 300ms; // a hang costs one attempt
      auto svc = spawn_service(*f.sys, rc);
      REQUIRE(svc);
      client c{*f.sys, *svc};
      std::vector<embed_request> reqs;
      std::vector<std::string> texts;
      for (int i = 0; i < 20; ++i) {
        texts.push_back(kind + " text " + std::to_string(i));
        reqs.push_back(make_request({texts.back()}, 8, 8000ms));
      }
      auto results = embed_concurrently(c, std::move(reqs));
      for (std::size_t i = 0; i < results.size(); ++i) {
        auto& r = results[i].result;
        INFO(kind << " request " << i << ": "
                  << (r ? std::string("ok") : render_error(r.error())));
        REQUIRE(r);
        CHECK(vector_matches(r->embeddings[0], texts[i], 8));
        CHECK(results[i].took <= 8000ms + deadline_grace);
      }
      CHECK(srv->stats().fault_count(kind == "429" ? "429" : kind) > 0);
    }
  }
}

TEST_CASE("non-retryable and persistent faults map to typed errors") {
  struct expectation {
    std::string fault;
    errc code;
    int32_t status;
    int attempts;
  };
  for (auto& e :
       std::vector<expectation>{{"quota", errc::quota_exceeded, 429, 1},
                                {"401", errc::auth_failed, 401, 1},
                                {"403", errc::auth_failed, 403, 1},
                                {"400", errc::invalid_input, 400, 1},
                                {"500", errc::upstream_error, 500, 8},
                                {"429", errc::rate_limited, 429, 8},
                                {"malformed", errc::invalid_response, 0, 8},
                                {"reset", errc::connection_failed, 0, 8}}) {
    DYNAMIC_SECTION("fault " << e.fault) {
      system_fixture f;
      mock::mock_options opts;
      opts.faults = *mock::parse_fault_spec(e.fault + ":1").value;
      auto srv = start_mock(opts);
      auto svc = spawn_service(*f.sys, make_config(srv->base_url(), 2));
      REQUIRE(svc);
      client c{*f.sys, *svc};
      auto start = steady::now();
      auto r = c.embed(make_request({"some text"}, 8, 8000ms)).get();
      CHECK(steady::now() - start <= 8000ms + deadline_grace);
      REQUIRE(!r);
      INFO(render_error(r.error()));
      CHECK(error_code(r.error()) == e.code);
      CHECK(error_http_status(r.error()) == e.status);
      CHECK(srv->stats().embedding_requests
            == static_cast<uint64_t>(e.attempts));
    }
  }
}

TEST_CASE("a hanging upstream is cut by the attempt timeout and the deadline "
          "holds") {
  system_fixture f;
  mock::mock_options opts;
  opts.faults = *mock::parse_fault_spec("hang:1").value;
  auto srv = start_mock(opts);
  auto rc = make_config(srv->base_url(), 2);
  rc.upstreams[0].attempt_timeout = 200ms;
  auto svc = spawn_service(*f.sys, rc);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  auto results = embed_concurrently(
      c, {make_request({"a"}, 8, 1000ms), make_request({"b"}, 8, 1000ms)});
  for (auto& r : results) {
    REQUIRE(!r.result);
    auto code = error_code(r.result.error());
    CHECK((code == errc::deadline_exceeded || code == errc::connection_failed));
    CHECK(r.took <= 1000ms + deadline_grace);
  }
  // Several attempts were made (each cut at 200 ms), not one stuck forever.
  CHECK(srv->stats().embedding_requests >= 4);
}

TEST_CASE("a shared io_runtime stopped with an exchange pending is released "
          "with the actor system") {
  // What `embedrt serve` does at a failed start: the service is told to
  // stop and the I/O threads stop while an exchange is still pending. The
  // exchange's handler then never runs; nothing it holds may own the
  // io_runtime, else the io_context (which holds the handler) is never
  // destroyed.
  mock::mock_options opts;
  opts.faults = *mock::parse_fault_spec("hang:1").value;
  auto srv = start_mock(opts);
  std::weak_ptr<io_runtime> weak;
  {
    auto io = std::make_shared<io_runtime>(1);
    weak = io;
    system_fixture f;
    service_hooks hooks;
    hooks.io = io;
    auto rc = make_config(srv->base_url(), 1);
    rc.upstreams[0].attempt_timeout = 30000ms;
    auto svc = spawn_service(*f.sys, rc, std::move(hooks));
    REQUIRE(svc);
    {
      client c{*f.sys, *svc};
      auto pending = c.embed(make_request({"pending"}, 8, 30000ms));
      for (int i = 0; i < 500 && srv->stats().embedding_requests == 0; ++i)
        std::this_thread::sleep_for(10ms);
      REQUIRE(srv->stats().embedding_requests == 1);
      // The I/O threads stop first: the exchange's handler stays queued.
      io->stop();
      io.reset();
      caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
      // Answered (cancelled) by the stopping service, not left hanging.
      auto r = pending.get();
      REQUIRE(!r);
      CHECK(error_code(r.error()) == errc::cancelled);
    }
    svc = caf::error{};
    f.sys.reset();
  }
  CHECK(weak.expired());
}

TEST_CASE("invalid input is rejected before any network I/O") {
  system_fixture f;
  auto srv = start_mock();
  auto svc = spawn_service(*f.sys, make_config(srv->base_url(), 1));
  REQUIRE(svc);
  client c{*f.sys, *svc};
  for (auto inputs :
       {std::vector<std::string>{}, std::vector<std::string>{""},
        std::vector<std::string>{"ok", "bad \xc3\x28 utf8"},
        std::vector<std::string>{std::string("nul\0byte", 8)},
        std::vector<std::string>{std::string(1024 * 1024, 'x')}}) {
    auto r = c.embed(make_request(inputs)).get();
    REQUIRE(!r);
    CHECK(error_code(r.error()) == errc::invalid_input);
  }
  auto neg = make_request({"fine"});
  neg.dimensions = -3;
  auto r = c.embed(neg).get();
  REQUIRE(!r);
  CHECK(error_code(r.error()) == errc::invalid_input);
  CHECK(srv->stats().embedding_requests == 0);
}

TEST_CASE("TLS: verified with the CA file, tls_failed without it") {
  system_fixture f;
  mock::mock_options opts;
  opts.tls_cert_file = EMBEDRT_TEST_DATA_DIR "/tls/server.pem";
  opts.tls_key_file = EMBEDRT_TEST_DATA_DIR "/tls/server.key";
  auto srv = start_mock(opts);
  REQUIRE(srv->base_url().rfind("https://", 0) == 0);
  {
    auto rc = make_config(srv->base_url(), 2);
    rc.upstreams[0].ca_file = EMBEDRT_TEST_DATA_DIR "/tls/ca.pem";
    auto svc = spawn_service(*f.sys, rc);
    REQUIRE(svc);
    client c{*f.sys, *svc};
    auto r = c.embed(make_request({"secure text"}, 8)).get();
    REQUIRE(r);
    CHECK(vector_matches(r->embeddings[0], "secure text", 8));
  }
  {
    auto svc = spawn_service(*f.sys, make_config(srv->base_url(), 2));
    REQUIRE(svc);
    client c{*f.sys, *svc};
    auto start = steady::now();
    auto r = c.embed(make_request({"secure text"}, 8, 3000ms)).get();
    CHECK(steady::now() - start <= 3000ms + deadline_grace);
    REQUIRE(!r);
    CHECK(error_code(r.error()) == errc::tls_failed);
  }
}

TEST_CASE("connection actors killed under load: every request answered") {
  // Declared before the actor system, so they outlive it: a pool may restart
  // a connection (calling the hook) until the system has ended.
  std::mutex mtx;
  std::vector<caf::actor> conns;
  bool recording = true; // no handle is kept once the test is done
  system_fixture f;
  auto srv = start_mock(test::slow_upstream(5));
  service_hooks hooks;
  hooks.crash_marker = "__crash__";
  hooks.on_connection_spawned = [&](const std::string&, const caf::actor& a) {
    std::lock_guard<std::mutex> guard{mtx};
    if (recording)
      conns.push_back(a);
  };
  auto rc = make_config(srv->base_url(), 4);
  rc.upstreams[0].supervision.max_restarts = 1000;
  auto svc = spawn_service(*f.sys, rc, hooks);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  REQUIRE(c.health()); // the pool has spawned its connections
  {
    std::lock_guard<std::mutex> guard{mtx};
    REQUIRE(conns.size() == 4);
  }
  std::vector<std::string> texts;
  std::vector<std::future<caf::expected<embed_result>>> futs;
  std::vector<std::future<caf::expected<embed_result>>> crashes;
  auto load_start = steady::now();
  for (int i = 0; i < 400; ++i) {
    texts.push_back("load " + std::to_string(i));
    futs.push_back(c.embed(make_request({texts.back()}, 8, 8000ms)));
    if (i % 50 == 10) {
      // An exception in a connection actor's handler ...
      crashes.push_back(c.embed(make_request({"__crash__"}, 8, 8000ms)));
      // ... and an exit with an error.
      std::lock_guard<std::mutex> guard{mtx};
      caf::anon_send_exit(conns[static_cast<std::size_t>(i) % conns.size()],
                          caf::exit_reason::user_shutdown);
    }
  }
  for (std::size_t i = 0; i < futs.size(); ++i) {
    auto r = futs[i].get();
    INFO("request " << i << ": "
                    << (r ? std::string("ok") : render_error(r.error())));
    REQUIRE(r);
    CHECK(vector_matches(r->embeddings[0], texts[i], 8));
  }
  for (auto& fut : crashes) {
    auto r = fut.get();
    REQUIRE(!r); // the poison call fails alone, after bounded retries
  }
  // Every request was issued after load_start with an 8 s deadline.
  CHECK(steady::now() - load_start <= 8000ms + deadline_grace);
  std::lock_guard<std::mutex> guard{mtx};
  CHECK(conns.size() > 4); // connections were restarted
  recording = false;
  conns.clear();
}

TEST_CASE("a down upstream is skipped: requests fail over to the next one") {
  system_fixture f;
  auto srv_a = start_mock();
  auto srv_b = start_mock();
  service_hooks hooks;
  hooks.crash_marker = "__crash__";
  auto rc = make_config(srv_a->base_url(), 2);
  rc.upstreams[0].name = "a";
  rc.upstreams[0].supervision.max_restarts = 0; // first crash: down
  rc.upstreams[0].supervision.down_backoff = 60000ms;
  auto b = rc.upstreams[0];
  b.name = "b";
  b.base_url = srv_b->base_url();
  b.supervision.max_restarts = 1000;
  b.priority = 1; // the fallback: "a" and "b" serve the same models
  rc.upstreams.push_back(b);
  auto svc = spawn_service(*f.sys, rc, hooks);
  REQUIRE(svc);
  client c{*f.sys, *svc};
  // Before: "a" serves (the lower priority).
  auto before = c.embed(make_request({"first"}, 8)).get();
  REQUIRE(before);
  CHECK(before->upstream == "a");
  // A poison call takes "a" down (and then fails alone on "b").
  auto poison_start = steady::now();
  auto poison = c.embed(make_request({"__crash__"}, 8, 8000ms)).get();
  REQUIRE(!poison);
  // Work re-queued by a dying connection of a down upstream is answered at
  // once (and fails over), not left queued until its deadline.
  CHECK(steady::now() - poison_start < 4000ms);
  auto health = c.health();
  REQUIRE(health);
  REQUIRE(health->upstreams.size() == 2);
  for (auto& h : health->upstreams)
    CHECK(h.state == (h.name == "a" ? "down" : "up"));
  // The poison call also crashed b's connections, which restart after
  // their backoff: ready again once one of them is back (a service with
  // no live connection is not ready), within a bound.
  for (auto until = steady::now() + 5000ms;
       !health->ready && steady::now() < until;) {
    std::this_thread::sleep_for(20ms);
    health = c.health();
    REQUIRE(health);
  }
  CHECK(health->ready);
  // After: every request is answered by "b", with the right vectors.
  srv_a->reset_stats();
  std::vector<embed_request> reqs;
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) {
    texts.push_back("failover " + std::to_string(i));
    reqs.push_back(make_request({texts.back()}, 8, 8000ms));
  }
  auto results = embed_concurrently(c, std::move(reqs));
  for (std::size_t i = 0; i < results.size(); ++i) {
    auto& r = results[i].result;
    REQUIRE(r);
    CHECK(results[i].took <= 8000ms + deadline_grace);
    CHECK(r->upstream == "b");
    CHECK(vector_matches(r->embeddings[0], texts[i], 8));
  }
  CHECK(srv_a->stats().embedding_requests == 0);
}
