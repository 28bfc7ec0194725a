// Operations end to end (issue 14): the real `embedrt serve` in front of real
// `embedrt mock` processes on loopback. SIGHUP reloads the configuration
// without dropping a request; active health checks make /readyz right
// before any traffic; requests for a model are balanced across the
// upstreams that serve it (least outstanding, weights) and only those; the
// connection gauges count sockets.
#include "serve_load_util.hpp"
#include "serve_test_util.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <rapidjson/document.h>
#include <string>
#include <thread>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out{path, std::ios::trunc};
  out << text;
  REQUIRE(out.good());
}

/// The mock's count of embedding requests.
int64_t embedding_requests(uint16_t mock_port) {
  http_client c{mock_port};
  auto res = c.request("GET", "/stats");
  rapidjson::Document doc;
  doc.Parse(res.body.c_str());
  INFO("stats: " << res.body);
  REQUIRE(doc.IsObject());
  return doc["embedding_requests"].GetInt64();
}

/// The gateway's `embedrt_requests_in_flight`.
int64_t requests_in_flight(uint16_t port, const header_list& auth) {
  http_client c{port};
  auto body = c.request("GET", "/metrics", {}, auth).body;
  const std::string name = "\nembedrt_requests_in_flight ";
  auto at = body.find(name);
  REQUIRE(at != std::string::npos);
  return std::stoll(body.substr(at + name.size()));
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos;
       at = text.find(what, at + 1))
    ++n;
  return n;
}

/// Health checks off: the mocks' request counts are the callers' alone.
std::vector<std::string> no_checks_env() {
  return clean_env({"EMBEDRT_HEALTH_CHECK_INTERVAL_MS=0"});
}

} // namespace

// -- SIGHUP --------------------------------------------------------------

TEST_CASE("serve: SIGHUP reloads the config file without dropping a request: "
          "a changed token takes effect, a broken file is refused") {
  mock_proc mock{{"--latency-ms", "1000"}};
  auto config = [&](const std::string& token, const std::string& name) {
    return "connections = 4\n[serve]\nauth_token = " + token
        + "\n[client steady]\ntoken = steady-token\n[upstream " + name
        + "]\nbase_url = " + mock.url + "\n";
  };
  temp_config file{config("first-token", "before")};
  process serve{{"serve", "--listen", "127.0.0.1:0", "--log-level", "info",
                 "--config", file.path}};
  auto port = serve.wait_listening();
  http_client client{port};
  auto body = embed_body({"reload"}, 8);
  auto with = [](const std::string& token) {
    return header_list{{"Authorization", "Bearer " + token}};
  };
  REQUIRE(client.embed(body, with("first-token")).status == 200);
  // Slow requests in flight when the signal comes (all six in the gateway
  // before it: one arriving after it would rightly get 401), and callers
  // that keep sending through the reload (a token valid in both files).
  auto in_flight = std::async(std::launch::async, [&] {
    return concurrently(port, 6, body, with("first-token"));
  });
  bool flying = false;
  for (int i = 0; i < 500 && !flying; ++i) {
    flying = requests_in_flight(port, with("first-token")) >= 6;
    if (!flying)
      std::this_thread::sleep_for(milliseconds{10});
  }
  REQUIRE(flying);
  std::atomic<bool> stop{false};
  std::vector<std::future<std::vector<int>>> steady;
  for (int t = 0; t < 3; ++t)
    steady.push_back(std::async(std::launch::async, [&, t] {
      std::vector<int> statuses;
      http_client c{port};
      while (!stop.load())
        statuses.push_back(
            c.embed(embed_body({"steady " + std::to_string(t)}, 8),
                    with("steady-token"), milliseconds{10000})
                .status);
      return statuses;
    }));
  write_file(file.path, config("second-token", "after"));
  serve.signal(SIGHUP);
  // The new token works once the reload is done; the old one no more.
  bool switched = false;
  for (int i = 0; i < 100 && !switched; ++i) {
    switched = client.embed(body, with("second-token")).status == 200;
    if (!switched)
      std::this_thread::sleep_for(milliseconds{50});
  }
  REQUIRE(switched);
  CHECK(client.embed(body, with("first-token")).status == 401);
  auto ready = client.request("GET", "/readyz");
  CHECK(ready.status == 200);
  CHECK_THAT(ready.body, Catch::Contains("\"name\":\"after\""));
  // Every request in flight during the reload got exactly one answer: 200
  // (the old token was valid when it came).
  for (auto& res : in_flight.get()) {
    INFO("status " << res.status << " body " << res.body);
    CHECK(res.status == 200);
  }
  std::this_thread::sleep_for(milliseconds{300});
  stop = true;
  std::size_t answered = 0;
  for (auto& f : steady)
    for (int status : f.get()) {
      CHECK(status == 200);
      ++answered;
    }
  CHECK(answered >= 3);
  // A file that does not parse is refused; the running configuration stays.
  write_file(file.path, config("third-token", "broken") + "conections = 3\n");
  serve.signal(SIGHUP);
  for (int i = 0; i < 10; ++i) {
    CHECK(client.embed(body, with("second-token")).status == 200);
    std::this_thread::sleep_for(milliseconds{50});
  }
  CHECK(client.embed(body, with("third-token")).status == 401);
  serve.signal(SIGTERM);
  CHECK(serve.wait_exit(milliseconds{10000}) == 0);
  auto log = serve.stderr_text();
  CHECK(count_of(log, "event=config_reloaded") == 1);
  CHECK_THAT(log, Catch::Contains("event=config_reload_failed"));
  CHECK_THAT(log, Catch::Contains("unknown key"));
  CHECK(log.find("second-token") == std::string::npos);
  CHECK(log.find("steady-token") == std::string::npos);
}

TEST_CASE("serve: SIGHUP can change the upstreams, and a drained configuration "
          "closes its upstream connections") {
  mock_proc one;
  mock_proc two;
  temp_config file{"[upstream one]\nbase_url = " + one.url + "\n"};
  serve_proc serve{{"--config", file.path}, no_checks_env()};
  http_client client{serve.port};
  auto body = embed_body({"moved"}, 8);
  REQUIRE(client.embed(body).status == 200);
  CHECK(embedding_requests(one.port) == 1);
  write_file(file.path, "[upstream two]\nbase_url = " + two.url + "\n");
  serve.proc.signal(SIGHUP);
  REQUIRE(readyz_lists(client, "two", milliseconds{5000}));
  for (int i = 0; i < 5; ++i)
    REQUIRE(client.embed(body).status == 200);
  CHECK(embedding_requests(one.port) == 1);
  CHECK(embedding_requests(two.port) == 5);
  // The old runtime stopped: its keep-alive connection to `one` is closed.
  bool closed = false;
  for (int i = 0; i < 100 && !closed; ++i) {
    http_client stats{one.port};
    auto s = stats.request("GET", "/stats");
    // This stats request's own connection is the only one left.
    closed = s.body.find("\"connections_open\":1") != std::string::npos;
    if (!closed)
      std::this_thread::sleep_for(milliseconds{50});
  }
  CHECK(closed);
}

TEST_CASE("serve: after a SIGHUP the draining and the new configuration share "
          "one response budget") {
  // The mock's latency keeps the first request's lease through the reload.
  mock_proc mock{{"--latency-ms", "4000"}};
  auto config = [&](const std::string& name) {
    return "[serve]\nresponse_budget_bytes = 1048576\n[upstream " + name
        + "]\nbase_url = " + mock.url + "\n";
  };
  temp_config file{config("before")};
  serve_proc serve{{"--config", file.path}, no_checks_env()};
  http_client client{serve.port};
  const std::string held = "embedrt_gateway_response_bytes_held";
  // 100 x 1,024 floats, about 1.6 MB estimated: more than the budget, so
  // admitted only alone.
  std::vector<std::string> texts;
  for (int i = 0; i < 100; ++i)
    texts.push_back("large " + std::to_string(i));
  auto large = std::async(std::launch::async, [&] {
    http_client c{serve.port};
    return c.embed(embed_body(texts, 1024), {}, milliseconds{30000});
  });
  std::optional<double> taken;
  for (int i = 0; i < 200 && !(taken && *taken > 0); ++i) {
    taken = metric_value(client.request("GET", "/metrics").body, held);
    if (!(taken && *taken > 0))
      std::this_thread::sleep_for(milliseconds{10});
  }
  REQUIRE((taken && *taken > 1048576));
  write_file(file.path, config("after"));
  serve.proc.signal(SIGHUP);
  REQUIRE(readyz_lists(client, "after", milliseconds{2000}));
  // The new configuration's gateway holds the old one's lease in its budget
  // (its own would be empty, and would admit the next request alone) ...
  auto now_held = metric_value(client.request("GET", "/metrics").body, held);
  REQUIRE(now_held);
  CHECK(*now_held == *taken);
  auto refused = client.embed(embed_body({"second"}, 1024));
  CHECK(refused.status == 429);
  CHECK_THAT(refused.body, Catch::Contains("overloaded"));
  // ... until the draining request is answered.
  CHECK(large.get().status == 200);
  CHECK(wait_metric(serve.port, held, 0, milliseconds{5000}) == 0.0);
  CHECK(
      client.embed(embed_body({"third"}, 1024), {}, milliseconds{30000}).status
      == 200);
}

// -- health checks ---------------------------------------------------------

TEST_CASE("serve: /readyz is 503 before any traffic for an upstream on a dead "
          "port or at a wrong path (health checks)") {
  auto env = clean_env({"EMBEDRT_HEALTH_CHECK_INTERVAL_MS=200"});
  {
    refusing_upstream dead;
    serve_proc serve{{"--upstream", dead.url}, env};
    http_client client{serve.port};
    CHECK(readyz_becomes(client, 503, milliseconds{5000}));
    CHECK_THAT(client.request("GET", "/readyz").body,
               Catch::Contains("\"state\":\"unhealthy\""));
    CHECK_THAT(client.request("GET", "/metrics").body,
               Catch::Contains("embedrt_upstream_up{upstream=\"127.0.0.1:"));
    serve.proc.signal(SIGTERM);
    CHECK(serve.proc.wait_exit(milliseconds{10000}) == 0);
    auto log = serve.proc.stderr_text();
    // Logged once, however many checks failed.
    CHECK(count_of(log, "event=upstream_unhealthy") == 1);
    CHECK_THAT(log, Catch::Contains("connection_failed"));
  }
  {
    // A base URL whose path the upstream does not serve: 404.
    mock_proc mock;
    auto wrong = "http://127.0.0.1:" + std::to_string(mock.port) + "/api";
    serve_proc serve{{"--upstream", wrong}, env};
    http_client client{serve.port};
    CHECK(readyz_becomes(client, 503, milliseconds{5000}));
    auto metrics = client.request("GET", "/metrics").body;
    CHECK_THAT(metrics,
               Catch::Contains("embedrt_upstream_up{upstream=\"127.0.0.1:"
                               + std::to_string(mock.port) + "\"} 0"));
    serve.proc.signal(SIGTERM);
    CHECK(serve.proc.wait_exit(milliseconds{10000}) == 0);
    CHECK_THAT(serve.proc.stderr_text(), Catch::Contains("404"));
  }
}

TEST_CASE("serve: health checks follow an outage and the recovery without "
          "user traffic") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url},
                   clean_env({"EMBEDRT_HEALTH_CHECK_INTERVAL_MS=200"})};
  http_client client{serve.port};
  http_client control{mock.port};
  CHECK(readyz_becomes(client, 200, milliseconds{5000}));
  REQUIRE(control.request("POST", "/outage", "500").status == 200);
  CHECK(readyz_becomes(client, 503, milliseconds{5000}));
  REQUIRE(control.request("POST", "/outage", "none").status == 200);
  CHECK(readyz_becomes(client, 200, milliseconds{5000}));
  // No caller sent anything: the mock served the checks before the outage
  // and after it (it counts only the requests it answered with vectors).
  CHECK(embedding_requests(mock.port) >= 2);
}

// -- routing -------------------------------------------------------------

TEST_CASE("serve: each model goes only to the upstreams that serve it (the "
          "documented two-upstream file)") {
  mock_proc openai;
  mock_proc tei;
  // docs/cli.md, "The config file", with the two mocks as upstreams.
  temp_config file{"[upstream openai]\nbase_url = " + openai.url
                   + "\nmodels = text-embedding-3-small, "
                     "text-embedding-3-large, small, large\n"
                     "model_map = small=text-embedding-3-small, "
                     "large=text-embedding-3-large\n"
                     "[upstream local-tei]\nbase_url = "
                   + tei.url
                   + "\nprovider = tei\nmodels = bge-small\n"
                     "connections = 4\n"};
  serve_proc serve{{"--config", file.path}, no_checks_env()};
  http_client client{serve.port};
  for (int i = 0; i < 4; ++i)
    REQUIRE(client.embed(embed_body({"tei"}, 8, false, "bge-small")).status
            == 200);
  for (const char* m : {"small", "text-embedding-3-large"})
    REQUIRE(client.embed(embed_body({"openai"}, 8, false, m)).status == 200);
  CHECK(embedding_requests(tei.port) == 4);
  CHECK(embedding_requests(openai.port) == 2);
  // A model neither serves: OpenAI's 404.
  CHECK(client.embed(embed_body({"x"}, 8, false, "other")).status == 404);
}

TEST_CASE("serve: concurrent requests are balanced across upstreams serving "
          "the same model, and weights share sequential traffic") {
  SECTION("least outstanding") {
    mock_proc a{{"--latency-ms", "300"}};
    mock_proc b{{"--latency-ms", "300"}};
    temp_config file{""
                     "[upstream a]\nbase_url = "
                     + a.url + "\nbatching = false\n[upstream b]\nbase_url = "
                     + b.url + "\nbatching = false\n"};
    serve_proc serve{{"--config", file.path}, no_checks_env()};
    auto results = concurrently(serve.port, 20, embed_body({"spread"}, 8));
    for (auto& res : results)
      CHECK(res.status == 200);
    auto na = embedding_requests(a.port);
    auto nb = embedding_requests(b.port);
    CHECK(na + nb == 20);
    // In-order failover would send all 20 to `a` (8 connections, the rest
    // queued); least outstanding splits them about evenly.
    CHECK(na >= 7);
    CHECK(nb >= 7);
  }
  SECTION("weights") {
    mock_proc a;
    mock_proc b;
    temp_config file{"[upstream a]\nbase_url = " + a.url
                     + "\nweight = 3\n[upstream b]\nbase_url = " + b.url
                     + "\nweight = 1\n"};
    serve_proc serve{{"--config", file.path}, no_checks_env()};
    http_client client{serve.port};
    for (int i = 0; i < 200; ++i)
      REQUIRE(client.embed(embed_body({"weighted"}, 8)).status == 200);
    auto na = embedding_requests(a.port);
    auto nb = embedding_requests(b.port);
    CHECK(na + nb == 200);
    // 3 : 1 expected (150 : 50); these bounds are 5 standard deviations.
    CHECK(na >= 120);
    CHECK(nb >= 20);
  }
}

TEST_CASE("serve: an unhealthy upstream is routed around before any request "
          "fails on it") {
  refusing_upstream dead;
  mock_proc live;
  temp_config file{"[upstream dead]\nbase_url = " + dead.url
                   + "\n[upstream live]\nbase_url = " + live.url + "\n"};
  serve_proc serve{{"--config", file.path},
                   clean_env({"EMBEDRT_HEALTH_CHECK_INTERVAL_MS=200"})};
  http_client client{serve.port};
  // The dead one's check failed: still ready (the live one serves).
  bool unhealthy = false;
  for (int i = 0; i < 100 && !unhealthy; ++i) {
    unhealthy = client.request("GET", "/readyz").body.find("\"unhealthy\"")
        != std::string::npos;
    if (!unhealthy)
      std::this_thread::sleep_for(milliseconds{50});
  }
  REQUIRE(unhealthy);
  CHECK(client.request("GET", "/readyz").status == 200);
  auto checks = embedding_requests(live.port);
  for (int i = 0; i < 20; ++i)
    REQUIRE(client.embed(embed_body({"around"}, 8)).status == 200);
  // All 20 went to the live one at the first try (plus its own checks).
  CHECK(embedding_requests(live.port) - checks >= 20);
  auto metrics = client.request("GET", "/metrics").body;
  CHECK(metrics.find("embedrt_retries_total{upstream=\"dead\"} 0")
        != std::string::npos);
}

// -- gauges --------------------------------------------------------------

TEST_CASE("serve: the connection gauges count sockets, not connection "
          "actors") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url, "--connections", "16"},
                   no_checks_env()};
  http_client client{serve.port};
  auto label = "{upstream=\"127.0.0.1:" + std::to_string(mock.port) + "\"}";
  auto before = client.request("GET", "/metrics").body;
  CHECK_THAT(before,
             Catch::Contains("embedrt_connections_open" + label + " 0"));
  CHECK_THAT(before,
             Catch::Contains("embedrt_connection_actors" + label + " 16"));
  for (int i = 0; i < 3; ++i)
    REQUIRE(client.embed(embed_body({"one socket"}, 8)).status == 200);
  auto after = client.request("GET", "/metrics").body;
  // Sequential requests: one keep-alive socket, idle now.
  CHECK_THAT(after, Catch::Contains("embedrt_connections_open" + label + " 1"));
  CHECK_THAT(after, Catch::Contains("embedrt_connections_idle" + label + " 1"));
  CHECK_THAT(after, Catch::Contains("embedrt_connections_busy" + label + " 0"));
  CHECK_THAT(after,
             Catch::Contains("embedrt_connection_actors" + label + " 16"));
  // The mock agrees: one connection from the gateway (plus this one).
  http_client stats{mock.port};
  CHECK_THAT(stats.request("GET", "/stats").body,
             Catch::Contains("\"connections_open\":2"));
}

// -- Threads -------------------------------------------------------------

namespace {

/// The threads of process `pid` named `name` (/proc/PID/task/*/comm).
std::size_t threads_named(pid_t pid, const std::string& name) {
  std::size_t n = 0;
  auto dir = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& task : std::filesystem::directory_iterator{dir}) {
    std::ifstream in{task.path() / "comm"};
    std::string comm;
    std::getline(in, comm);
    n += comm == name ? 1 : 0;
  }
  return n;
}

} // namespace

TEST_CASE("serve: the runtime's upstream connections run on the front end's "
          "I/O threads") {
  mock_proc mock;
  auto io_threads = [&](const char* n) {
    serve_proc serve{{"--upstream", mock.url, "--io-threads", n},
                     no_checks_env()};
    // A request through the gateway: the upstream connection is open and
    // every part of the runtime has started.
    http_client client{serve.port};
    REQUIRE(client.embed(embed_body({"threads"}, 8)).status == 200);
    return threads_named(serve.proc.pid(), "embedrt.io");
  };
  auto one = io_threads("1");
  auto three = io_threads("3");
  // Two more --io-threads are two more I/O threads: the front end and the
  // runtime share them (each with threads of its own, it would be four).
  CHECK(three - one == 2);
}
