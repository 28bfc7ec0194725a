// Reliability end to end (issue 15): the real `embedrt serve` binary in front
// of the real `embedrt mock` on loopback. A black-holed upstream trips the
// breaker even when every caller's deadline is shorter than the attempt
// timeout; admission refuses at once what cannot finish within its deadline;
// an upstream that refuses base64 is answered in float, and one that refuses
// every request the same way is reported as the upstream's problem.
#include "serve_test_util.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {} // namespace

TEST_CASE("serve: a black-holed upstream trips the breaker with short "
          "deadlines, callers get 504, then fail fast with 503") {
  // The mock accepts and reads every request and never answers. The callers'
  // deadlines (1.5 s) are far below the attempt timeout (10 s), so every
  // attempt is cut at its caller's deadline: after 1 s of silence each one
  // counts as the upstream's failure (breaker_silent_call_ms).
  mock_proc mock{{"--fault", "hang:1"}};
  serve_proc serve{{"--upstream", mock.url, "--connections", "8"}};
  auto body = embed_body({"into the void"}, 8);
  auto start = steady_clock::now();
  auto first
      = concurrently(serve.port, 6, body, {{"x-embedrt-timeout-ms", "1500"}},
                     milliseconds{10000});
  for (const auto& res : first) {
    INFO("status " << res.status << " body " << res.body);
    REQUIRE(res.status == 504);
    CHECK(error_of(res).code == "deadline_exceeded");
  }
  CHECK(steady_clock::now() - start < milliseconds{6000});
  http_client client{serve.port};
  // Five silent attempts in a row opened the breaker: not ready, and the
  // next caller fails fast instead of waiting out its deadline.
  CHECK(readyz_becomes(client, 503, milliseconds{2000}));
  auto t0 = steady_clock::now();
  auto fast = client.embed(body, {{"x-embedrt-timeout-ms", "1500"}},
                           milliseconds{10000});
  auto took = steady_clock::now() - t0;
  REQUIRE(fast.status == 503);
  CHECK(error_of(fast).code == "breaker_open");
  CHECK(fast.has_header("retry-after"));
  CHECK(took < milliseconds{1000});
  auto metrics = client.request("GET", "/metrics");
  CHECK_THAT(metrics.body,
             Catch::Contains("embedrt_breaker_state{upstream=\"127.0.0.1:"
                             + std::to_string(mock.port) + "\"} 1"));
  serve.proc.signal(SIGTERM);
  CHECK(serve.proc.wait_exit(milliseconds{10000}) == 0);
  auto log = serve.proc.stderr_text();
  CHECK_THAT(log, Catch::Contains("event=breaker_transition"));
  CHECK_THAT(log, Catch::Contains("no answer for"));
}

TEST_CASE("serve: short deadlines against a slow but answering upstream do "
          "not trip the breaker") {
  // 600 ms per answer, 300 ms deadlines: each attempt is cut at its caller's
  // deadline after less silence than the threshold: the callers' problem.
  mock_proc mock{{"--latency-ms", "600"}};
  serve_proc serve{{"--upstream", mock.url, "--connections", "8"}};
  auto body = embed_body({"patience"}, 8);
  auto first
      = concurrently(serve.port, 8, body, {{"x-embedrt-timeout-ms", "300"}},
                     milliseconds{10000});
  for (const auto& res : first) {
    INFO("status " << res.status << " body " << res.body);
    CHECK(res.status == 504);
  }
  http_client client{serve.port};
  CHECK(client.request("GET", "/readyz").status == 200);
  CHECK(client.embed(body, {}, milliseconds{10000}).status == 200);
}

TEST_CASE("serve: breaker_silent_call_ms = 0 leaves deadline-cut attempts "
          "to their callers") {
  mock_proc mock{{"--fault", "hang:1"}};
  temp_config file{"[upstream void]\nbase_url = " + mock.url
                   + "\nconnections = 8\nbreaker_silent_call_ms = 0\n"};
  serve_proc serve{{"--config", file.path}};
  auto first
      = concurrently(serve.port, 6, embed_body({"quiet"}, 8),
                     {{"x-embedrt-timeout-ms", "1200"}}, milliseconds{10000});
  for (const auto& res : first)
    CHECK(res.status == 504);
  http_client client{serve.port};
  CHECK(client.request("GET", "/readyz").status == 200);
}

TEST_CASE("serve: under 3x overload, accepted requests complete within their "
          "deadline and the excess gets 429 overloaded at once") {
  // 2 connections x 100 ms = 20 requests/s without batching; 60 requests at
  // once with 1 s deadlines: about 20 can finish in time. Without
  // deadline-aware admission all 60 were queued and 40 got 504 after 1 s.
  mock_proc mock{{"--latency-ms", "100"}};
  temp_config file{"[upstream slow]\nbase_url = " + mock.url
                   + "\nconnections = 2\nbatching = false\n"};
  serve_proc serve{{"--config", file.path}};
  auto body = embed_body({"crowded"}, 8);
  {
    // The service rate is learned from these.
    http_client warm{serve.port};
    for (int i = 0; i < 4; ++i)
      REQUIRE(warm.embed(body).status == 200);
  }
  struct timed_reply {
    http_response res;
    milliseconds took;
  };
  // All 60 connect first and send together: the overload is 60 requests
  // arriving at once, however slowly this machine starts threads.
  std::promise<void> go;
  std::shared_future<void> go_signal = go.get_future().share();
  std::atomic<int> connected{0};
  std::vector<std::future<timed_reply>> futs;
  for (int i = 0; i < 60; ++i)
    futs.push_back(std::async(std::launch::async, [&, go_signal] {
      http_client c{serve.port};
      c.connect(); // a failure shows as the reply's status below
      ++connected;
      go_signal.wait();
      auto t0 = steady_clock::now();
      auto res = c.embed(body, {{"x-embedrt-timeout-ms", "1000"}},
                         milliseconds{10000});
      return timed_reply{
          std::move(res),
          std::chrono::duration_cast<milliseconds>(steady_clock::now() - t0)};
    }));
  auto connect_limit = steady_clock::now() + milliseconds{10000};
  while (connected.load() < 60 && steady_clock::now() < connect_limit)
    std::this_thread::sleep_for(milliseconds{1});
  REQUIRE(connected.load() == 60);
  go.set_value();
  int ok = 0;
  int overloaded = 0;
  int late = 0;
  for (auto& f : futs) {
    auto r = f.get();
    INFO("status " << r.res.status << " after " << r.took.count()
                   << " ms: " << r.res.body);
    if (r.res.status == 200) {
      ++ok;
    } else if (r.res.status == 429) {
      ++overloaded;
      CHECK(error_of(r.res).code == "overloaded");
      CHECK(std::stoi(r.res.header("retry-after")) >= 1);
      // Refused at once, not after waiting in the queue.
      CHECK(r.took < milliseconds{500});
    } else {
      CHECK(r.res.status == 504);
      ++late;
    }
  }
  INFO("ok " << ok << ", overloaded " << overloaded << ", 504 " << late);
  CHECK(ok >= 8);
  CHECK(overloaded >= 20);
  CHECK(late <= 3);
}

TEST_CASE("serve: an upstream that refuses base64 is asked in float, once "
          "logged, and answers every caller") {
  mock_proc mock{{"--refuse-base64"}};
  serve_proc serve{{"--upstream", mock.url}};
  http_client client{serve.port};
  for (int i = 0; i < 3; ++i) {
    auto res = client.embed(embed_body({"floats only"}, 8));
    CHECK(vectors_of(res, 1, 8).size() == 1);
  }
  // The caller's own encoding is the gateway's business, not the upstream's.
  auto b64 = client.embed(embed_body({"floats only"}, 8, true));
  CHECK(vectors_of(b64, 1, 8, true).size() == 1);
  CHECK(client.request("GET", "/readyz").status == 200);
  serve.proc.signal(SIGTERM);
  REQUIRE(serve.proc.wait_exit(milliseconds{10000}) == 0);
  auto log = serve.proc.stderr_text();
  auto first = log.find("event=upstream_refuses_base64");
  REQUIRE(first != std::string::npos);
  CHECK(log.find("event=upstream_refuses_base64", first + 1)
        == std::string::npos);
}

TEST_CASE("serve: encoding_format = float in the config file never asks "
          "for base64") {
  mock_proc mock{{"--refuse-base64"}};
  temp_config file{"[upstream floats]\nbase_url = " + mock.url
                   + "\nencoding_format = float\n"};
  serve_proc serve{{"--config", file.path}};
  http_client client{serve.port};
  CHECK(vectors_of(client.embed(embed_body({"plain"}, 8)), 1, 8).size() == 1);
  serve.proc.signal(SIGTERM);
  REQUIRE(serve.proc.wait_exit(milliseconds{10000}) == 0);
  CHECK(serve.proc.stderr_text().find("upstream_refuses_base64")
        == std::string::npos);
  // Anything else is a configuration error.
  temp_config bad{"[upstream floats]\nbase_url = " + mock.url
                  + "\nencoding_format = binary\n"};
  process p{{"serve", "--listen", "127.0.0.1:0", "--config", bad.path}};
  CHECK(p.wait_exit(milliseconds{10000}) == 2);
  CHECK_THAT(p.stderr_text(), Catch::Contains("encoding_format"));
}

TEST_CASE("serve: an upstream refusing every request the same way is "
          "reported as its problem: 502, logged, not ready, healed, ready") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url, "--connections", "2"}};
  http_client client{serve.port};
  http_client control{mock.port};
  REQUIRE(client.embed(embed_body({"fine"}, 8)).status == 200);
  // Every request now gets the same 400 (as a TLS port answers plain HTTP).
  REQUIRE(control.request("POST", "/outage", "400").status == 200);
  for (int i = 0; i < 4; ++i) {
    auto res = client.embed(embed_body({"request " + std::to_string(i)}, 8));
    INFO(res.body);
    CHECK(res.status == 400); // could still be this caller's input
  }
  auto blamed = client.embed(embed_body({"request 4"}, 8));
  INFO(blamed.body);
  CHECK(blamed.status == 502);
  CHECK_THAT(blamed.body, Catch::Contains("refuses every request"));
  auto ready = client.request("GET", "/readyz");
  CHECK(ready.status == 503);
  CHECK_THAT(ready.body, Catch::Contains("misconfigured"));
  REQUIRE(control.request("POST", "/outage", "none").status == 200);
  CHECK(client.embed(embed_body({"healed"}, 8)).status == 200);
  CHECK(client.request("GET", "/readyz").status == 200);
  serve.proc.signal(SIGTERM);
  REQUIRE(serve.proc.wait_exit(milliseconds{10000}) == 0);
  CHECK_THAT(serve.proc.stderr_text(),
             Catch::Contains("event=upstream_misconfigured"));
}
