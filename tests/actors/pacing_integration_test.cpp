// Pacing and adaptive concurrency over real sockets against the built-in
// upstream (the code of `embedrt mock`, in-process on 127.0.0.1), a few
// seconds each: with the mock's --tpm, pacing lets no 429 reach the upstream
// or the caller and keeps the throughput near the limit (without pacing the
// same load gets 429s); with adaptive concurrency, a 429 outage brings the
// calls in flight down and they recover when it ends.
#include "embedrt/all.hpp"
#include "embedrt/protocol/metrics.hpp"
#include "integration_fixture.hpp"
#include "mock/mock_server.hpp"

#include <atomic>
#include <caf/actor_system.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using namespace std::chrono_literals;

namespace {

/// A request of `inputs` token arrays of `ids` ids each: exactly
/// `inputs` x `ids` tokens for the runtime's estimate and for the mock.
embed_request tokens_request(int inputs, int ids, caf::timespan timeout) {
  embed_request req;
  req.model = "m";
  for (int i = 0; i < inputs; ++i)
    req.token_inputs.emplace_back(static_cast<std::size_t>(ids),
                                  static_cast<int32_t>(17 + i));
  req.timeout = timeout;
  return req;
}

upstream_config paced_upstream(const mock::mock_server& m, bool pacing) {
  upstream_config up;
  up.name = "limited";
  up.base_url = m.base_url();
  up.models = {"m"};
  up.connections = 4;
  up.pacing = pacing;
  return up;
}

struct paced_run {
  int ok = 0;
  int failed = 0;
  uint64_t upstream_429 = 0;
  uint64_t tokens_after_drain = 0;
  std::chrono::steady_clock::duration took{};
};

/// Empties the mock's token bucket (12,000 tokens) with one request, then
/// offers 3 x its 200 tokens per second for 1 s: 30 requests of 20 tokens.
paced_run run_limited(bool pacing) {
  mock::mock_options opts;
  opts.tpm = 12000;
  auto m = start_mock(opts);
  system_fixture fx;
  runtime_config rc;
  rc.upstreams.push_back(paced_upstream(*m, pacing));
  rc.retry.max_attempts = 3;
  auto svc = spawn_service(*fx.sys, rc);
  REQUIRE(svc);
  client c{*fx.sys, *svc};
  REQUIRE(c.embed(tokens_request(12, 1000, 10s)).get());
  auto drained = m->stats().tokens;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::future<caf::expected<embed_result>>> futs;
  for (int i = 0; i < 30; ++i) {
    futs.push_back(c.embed(tokens_request(1, 20, 8s)));
    std::this_thread::sleep_for(33ms); // the offered rate, not a wait
  }
  paced_run out;
  for (auto& f : futs) {
    if (f.get())
      ++out.ok;
    else
      ++out.failed;
  }
  out.took = std::chrono::steady_clock::now() - t0;
  out.upstream_429 = m->stats().status_count(429);
  out.tokens_after_drain = m->stats().tokens - drained;
  caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
  return out;
}

} // namespace

TEST_CASE("pacing: 3 x the mock's tpm gets no 429 and keeps near the limit",
          "[pacing][integration]") {
  auto paced = run_limited(true);
  CHECK(paced.ok == 30);
  CHECK(paced.failed == 0);
  CHECK(paced.upstream_429 == 0);
  CHECK(paced.tokens_after_drain == 600);
  // 600 tokens at 200 per second: 3 s at the limit; slower means tokens the
  // upstream allowed were not used.
  auto secs = std::chrono::duration<double>(paced.took).count();
  CAPTURE(secs);
  CHECK(600.0 / secs >= 0.8 * 200.0);
  // The same load without pacing finds the limit through 429s.
  auto unpaced = run_limited(false);
  CHECK(unpaced.upstream_429 > 0);
}

TEST_CASE("adaptive concurrency: a 429 outage lowers the limit, its end "
          "raises it again",
          "[pacing][integration]") {
  auto m = start_mock(slow_upstream(5));
  system_fixture fx;
  runtime_config rc;
  upstream_config up;
  up.name = "adaptive";
  up.base_url = m->base_url();
  up.models = {"m"};
  up.connections = 8;
  up.adaptive_concurrency = true;
  up.breaker.enabled = false;
  rc.upstreams.push_back(up);
  rc.retry.max_attempts = 1;
  auto svc = spawn_service(*fx.sys, rc);
  REQUIRE(svc);
  client c{*fx.sys, *svc};
  // 16 callers, each sending its next request when the last one ends.
  std::atomic<bool> running{true};
  std::atomic<int> live{0};
  std::function<void()> next = [&] {
    ++live;
    c.embed(tokens_request(1, 10, 5s), [&](caf::expected<embed_result>) {
      if (running)
        next();
      --live;
    });
  };
  for (int i = 0; i < 16; ++i)
    next();
  auto limit = [&] {
    auto snap = c.metrics();
    REQUIRE(snap);
    REQUIRE(snap->upstreams.size() == 1);
    return snap->upstreams[0].concurrency_limit;
  };
  auto becomes = [&](auto pred) {
    auto until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until) {
      if (pred(limit()))
        return true;
      std::this_thread::sleep_for(20ms); // polling a real process
    }
    return false;
  };
  CHECK(limit() == 8);
  m->set_outage(mock::fault{mock::fault_kind::rate_limit, 429});
  CHECK(becomes([](int32_t l) {
    return l <= 2;
  }));
  m->set_outage(mock::fault{});
  CHECK(becomes([](int32_t l) {
    return l == 8;
  }));
  running = false;
  while (live > 0)
    std::this_thread::sleep_for(5ms); // the last callbacks on CAF workers
  caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
}
