// `embedrt bench`: its figures (percentiles, texts, JSON line) and the real
// `embedrt` binary (EMBEDRT_CLI_PATH) run as a subprocess against the
// built-in upstream running in this test process, so that the bench
// process's own thread count is what the report shows.
#include "bench/bench_report.hpp"
#include "embedrt/proc_stats.hpp"
#include "mock/mock_server.hpp"
#include "mock_test_util.hpp"
#include "spawn_util.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <poll.h>
#include <rapidjson/document.h>
#include <set>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

using namespace embedrt;
using namespace std::chrono_literals;

namespace {

/// What a finished `embedrt` process left behind.
struct cli_run {
  int exit_code = -1; // -1: killed (timeout) or died from a signal
  std::string out;
  std::string err;
};

/// The environment of this process without the variables bench reads, plus
/// `extra` ("NAME=value").
std::vector<std::string> child_env(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv{*e};
    if (kv.rfind("OPENAI_", 0) == 0 || kv.rfind("BENCH_TEST_", 0) == 0)
      continue;
    env.emplace_back(kv);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

/// Runs `embedrt ARGS...` to completion (killed after `timeout`), collecting
/// stdout and stderr.
cli_run run_cli(std::vector<std::string> args,
                const std::vector<std::string>& extra_env = {},
                std::chrono::milliseconds timeout = 20s) {
  args.insert(args.begin(), EMBEDRT_CLI_PATH);
  auto env = child_env(extra_env);
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  auto child = test::spawn_with_pipes(std::move(args), envp.data());
  REQUIRE(child.rc == 0);
  auto pid = child.pid;
  cli_run res;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{child.out, POLLIN, 0}, {child.err, POLLIN, 0}};
  std::string* sinks[2] = {&res.out, &res.err};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    if (poll(fds, 2, static_cast<int>(left)) <= 0)
      continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0)
        continue;
      char buf[4096];
      auto n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else {
        fds[i].fd = -1; // poll ignores negative descriptors
        --open_fds;
      }
    }
  }
  close(child.out);
  close(child.err);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!killed && WIFEXITED(status))
    res.exit_code = WEXITSTATUS(status);
  return res;
}

/// Parses the single JSON line bench prints.
rapidjson::Document parse_report(const cli_run& run) {
  INFO("stdout: " << run.out << "\nstderr: " << run.err);
  REQUIRE(run.exit_code == 0);
  REQUIRE(!run.out.empty());
  REQUIRE(run.out.back() == '\n');
  REQUIRE(run.out.find('\n') == run.out.size() - 1); // exactly one line
  rapidjson::Document doc;
  doc.Parse(run.out.c_str());
  REQUIRE_FALSE(doc.HasParseError());
  REQUIRE(doc.IsObject());
  return doc;
}

int64_t int_of(const rapidjson::Document& d, const char* key) {
  INFO("key " << key);
  REQUIRE(d.HasMember(key));
  REQUIRE(d[key].IsInt64());
  return d[key].GetInt64();
}

double num_of(const rapidjson::Document& d, const char* key) {
  INFO("key " << key);
  REQUIRE(d.HasMember(key));
  REQUIRE(d[key].IsNumber());
  return d[key].GetDouble();
}

std::map<std::string, int64_t> errors_of(const rapidjson::Document& d) {
  REQUIRE(d.HasMember("errors"));
  REQUIRE(d["errors"].IsObject());
  std::map<std::string, int64_t> out;
  for (const auto& m : d["errors"].GetObject()) {
    REQUIRE(m.value.IsInt64());
    out[m.name.GetString()] = m.value.GetInt64();
  }
  return out;
}

} // namespace

// -- the figures -------------------------------------------------------------

TEST_CASE("bench percentiles are exact nearest-rank values") {
  std::vector<int64_t> xs;
  for (int64_t i = 1; i <= 1000; ++i)
    xs.push_back(i);
  CHECK(bench::nearest_rank(xs, 50) == 500);
  CHECK(bench::nearest_rank(xs, 95) == 950);
  CHECK(bench::nearest_rank(xs, 99) == 990);
  CHECK(bench::nearest_rank(xs, 99.9) == 999);
  CHECK(bench::nearest_rank(xs, 100) == 1000);
  CHECK(bench::nearest_rank({7}, 50) == 7);
  CHECK(bench::nearest_rank({7}, 99.9) == 7);
  CHECK(bench::nearest_rank({1, 2, 3, 4}, 50) == 2);
  CHECK(bench::nearest_rank({1, 2, 3, 4}, 51) == 3);
  // summarize reports log_histogram's percentiles (the metrics' buckets):
  // the upper bound of the nearest-rank sample's bucket (2 ms is in
  // (1.966080, 2.097152] ms), clamped to the max; exact max and mean.
  auto s = bench::summarize({4'000'000, 1'000'000, 3'000'000, 2'000'000});
  CHECK(s.count == 4);
  CHECK(s.p50_ms == Approx(2.097152));
  CHECK(s.p99_ms == Approx(4.0));
  CHECK(s.max_ms == Approx(4.0));
  CHECK(s.mean_ms == Approx(2.5));
  CHECK(bench::summarize({}).count == 0);
  // summarize_exact: the samples' own nearest-rank values. Around 50 ms,
  // where one histogram bucket spans (50.33, 54.53] ms, it tells 50.5 ms
  // from 52.5 ms; the histogram reports both as its clamped max.
  std::vector<int64_t> around50;
  for (int64_t i = 0; i < 1000; ++i)
    around50.push_back(i < 990 ? 50'500'000 : 52'500'000);
  around50.push_back(54'000'000);
  auto h = bench::summarize(around50);
  CHECK(h.p50_ms == Approx(54.0));
  CHECK(h.p99_ms == Approx(54.0));
  auto e = bench::summarize_exact(around50);
  CHECK(e.count == 1001);
  CHECK(e.p50_ms == Approx(50.5));
  CHECK(e.p95_ms == Approx(50.5));
  CHECK(e.p99_ms == Approx(52.5));  // rank 991 of 1001
  CHECK(e.p999_ms == Approx(52.5)); // rank 1000, the last of the ten
  CHECK(e.max_ms == Approx(54.0));
  CHECK(e.mean_ms == Approx((990 * 50.5 + 10 * 52.5 + 54.0) / 1001));
  std::vector<int64_t> none;
  CHECK(bench::summarize_exact(none).count == 0);
}

TEST_CASE(
    "bench texts are distinct and deterministic and of the asked length") {
  std::set<std::string> seen;
  for (uint64_t r = 0; r < 50; ++r)
    for (uint32_t i = 0; i < 4; ++i) {
      auto t = bench::bench_text(1, r, i, 40);
      CHECK(t.size() == 40);
      CHECK(t.back() != ' ');
      CHECK(t.rfind("bench text " + std::to_string(r) + "-" + std::to_string(i)
                        + " ",
                    0)
            == 0);
      CHECK(seen.insert(t).second);
      CHECK(t == bench::bench_text(1, r, i, 40));
    }
  CHECK(bench::bench_text(1, 3, 0, 1000).size() == 1000);
  CHECK(bench::bench_text(1, 3, 0, 5) == "bench text 3-0");
  CHECK(bench::bench_text(1, 3, 0, 60) != bench::bench_text(2, 3, 0, 60));
}

TEST_CASE("bench report renders one JSON line with nulls for missing data") {
  bench::bench_report r;
  r.requests = 10;
  r.inputs = 2;
  r.ok = 8;
  r.errors["upstream_error"] = 2;
  r.seconds = 2.0;
  std::vector<int64_t> lat{3'000'000, 1'000'000};
  r.ok_latency = bench::summarize(lat);
  r.ok_latency_exact = bench::summarize_exact(lat);
  auto json = bench::to_json(r);
  CHECK(json.find('\n') == std::string::npos);
  rapidjson::Document d;
  d.Parse(json.c_str());
  REQUIRE_FALSE(d.HasParseError());
  CHECK(num_of(d, "req_per_s") == Approx(5.0));
  CHECK(num_of(d, "texts_per_s") == Approx(8.0));
  // 1 ms's bucket bound, 1.048576 ms, with the JSON's 4 decimals.
  CHECK(num_of(d, "p50_ms") == Approx(1.0486).margin(1e-4));
  CHECK(num_of(d, "p99_ms") == Approx(3.0)); // clamped to the max
  CHECK(num_of(d, "exact_p50_ms") == Approx(1.0));
  CHECK(num_of(d, "exact_p99_ms") == Approx(3.0));
  CHECK(d["error_p50_ms"].IsNull());
  CHECK(d["reuse"].IsNull());
  CHECK(d["connections_opened"].IsNull());
  CHECK(errors_of(d) == std::map<std::string, int64_t>{{"upstream_error", 2}});
}

TEST_CASE("bench process stats (embedrt/proc_stats.hpp) read this process") {
  CHECK(thread_count() >= 1);
  CHECK(usable_cores() >= 1);
  auto u = sample_usage();
  CHECK(u.cpu_s >= 0);
  CHECK(u.max_rss_mb > 1);
}

// -- the command
// ---------------------------------------------------------------

TEST_CASE("embedrt bench runs 200 requests with 20 callers at constant threads "
          "and reuses its connections") {
  test::running_mock m;
  auto run = run_cli({"bench", "--upstream", m.server.base_url(), "--requests",
                      "200", "--concurrency", "20", "--warmup", "10",
                      "--workers", "2"});
  auto d = parse_report(run);
  CHECK(int_of(d, "requests") == 200);
  CHECK(int_of(d, "concurrency") == 20);
  CHECK(int_of(d, "inputs") == 1);
  CHECK(int_of(d, "dims") == 8);
  CHECK(int_of(d, "connections") == 8);
  CHECK(d["batching"].GetBool());
  CHECK_FALSE(d["embedded_upstream"].GetBool());
  CHECK(int_of(d, "ok") == 200);
  CHECK(errors_of(d).empty());
  CHECK(int_of(d, "workers") == 2); // --workers overrides the default
  // Workers, timer, I/O threads: fixed before the run, unchanged by it.
  auto t0 = int_of(d, "threads_start");
  CHECK(t0 >= 4);
  CHECK(int_of(d, "threads_peak") == t0);
  CHECK(int_of(d, "threads_end") == t0);
  auto calls = int_of(d, "upstream_requests");
  CHECK(calls >= 1);
  CHECK(calls <= 200);
  CHECK(int_of(d, "connections_opened") <= 8);
  CHECK(num_of(d, "reuse") >= 0.9);
  CHECK(int_of(d, "restarts") == 0);
  CHECK(int_of(d, "rejected") == 0);
  auto p50 = num_of(d, "p50_ms");
  CHECK(p50 > 0);
  CHECK(p50 <= num_of(d, "p95_ms"));
  CHECK(num_of(d, "p95_ms") <= num_of(d, "p99_ms"));
  CHECK(num_of(d, "p99_ms") <= num_of(d, "p999_ms"));
  CHECK(num_of(d, "p999_ms") <= num_of(d, "max_ms"));
  // The exact percentiles: in order, never above the histogram's (its
  // bucket bound is at or above the sample), at most one bucket (12.5 %)
  // below.
  for (const char* p : {"p50", "p95", "p99", "p999"}) {
    INFO(p);
    auto exact = num_of(d, (std::string{"exact_"} + p + "_ms").c_str());
    auto bucket = num_of(d, (std::string{p} + "_ms").c_str());
    CHECK(exact > 0);
    CHECK(exact <= bucket + 1e-4);
    CHECK(exact * 1.125 >= bucket - 1e-4);
  }
  CHECK(num_of(d, "exact_p50_ms") <= num_of(d, "exact_p99_ms"));
  CHECK(num_of(d, "exact_p999_ms") <= num_of(d, "max_ms"));
  CHECK(num_of(d, "seconds") > 0);
  CHECK(num_of(d, "req_per_s")
        == Approx(200 / num_of(d, "seconds")).epsilon(0.01));
  CHECK(num_of(d, "texts_per_s") == Approx(num_of(d, "req_per_s")));
  CHECK(num_of(d, "cpu_s") >= 0);
  CHECK(num_of(d, "max_rss_mb") > 1);
  // The upstream saw every text exactly once (warm-up included) over at most
  // the 8 pooled connections, and the measured upstream calls.
  auto stats = m.server.stats();
  CHECK(stats.inputs == 210);
  CHECK(stats.connections_accepted <= 8);
  CHECK(stats.embedding_requests >= static_cast<uint64_t>(calls));
  CHECK(stats.status_count(200) == stats.embedding_requests);
}

TEST_CASE(
    "embedrt bench without batching makes one upstream call per request") {
  test::running_mock m;
  auto run = run_cli({"bench", "--upstream", m.server.base_url(), "--requests",
                      "60", "--concurrency", "12", "--inputs", "3", "--dims",
                      "16", "--connections", "4", "--no-batching", "--warmup",
                      "4", "--text-bytes", "100"});
  auto d = parse_report(run);
  CHECK_FALSE(d["batching"].GetBool());
  // By default CAF's workers run the sockets: half the usable cores.
  auto cores = static_cast<int64_t>(embedrt::usable_cores());
  CHECK(int_of(d, "io_threads") == 0);
  CHECK(int_of(d, "workers") == (cores > 1 ? cores / 2 : 1));
  CHECK(d["scheduler"].GetString() == std::string{"io_workers"});
  CHECK(int_of(d, "ok") == 60);
  CHECK(errors_of(d).empty());
  CHECK(int_of(d, "upstream_requests") == 60);
  CHECK(num_of(d, "texts_per_s") == Approx(3 * num_of(d, "req_per_s")));
  auto stats = m.server.stats();
  CHECK(stats.embedding_requests == 64);
  CHECK(stats.inputs == 64 * 3);
  CHECK(stats.connections_accepted <= 4);
}

TEST_CASE("embedrt bench counts failed requests by error kind") {
  mock::mock_options opts;
  opts.faults.push_back({mock::fault{mock::fault_kind::status, 500}, 1.0});
  test::running_mock m{opts};
  auto run = run_cli({"bench", "--upstream", m.server.base_url(), "--requests",
                      "8", "--concurrency", "4", "--warmup", "0"});
  auto d = parse_report(run);
  CHECK(int_of(d, "ok") == 0);
  // Every request fails: with the upstream's 500 (after its retries) or, once
  // the breaker opened after 5 consecutive failures, fast with breaker_open
  // (a retry the open breaker refuses ends the request too).
  auto errors = errors_of(d);
  CHECK(errors["breaker_open"] >= 1);
  CHECK(errors["upstream_error"] + errors["breaker_open"] == 8);
  CHECK(errors.size() <= 2);
  CHECK(d["p50_ms"].IsNull());
  CHECK(num_of(d, "error_p50_ms") > 0);
  CHECK(num_of(d, "error_p50_ms") <= num_of(d, "error_p99_ms"));
  // Retried within the retry budget until the breaker opened: at least its
  // threshold, and at most the 4 callers' attempts in flight beyond it.
  auto fives = m.server.stats().status_count(500);
  CHECK(fives >= 5);
  CHECK(fives <= 5 + 4 + 1); // + a half-open probe if the run is slow
}

TEST_CASE("embedrt bench over TLS with --ca-file") {
  mock::mock_options opts;
  opts.tls_cert_file = test::tls_file("server.pem");
  opts.tls_key_file = test::tls_file("server.key");
  test::running_mock m{opts};
  auto url = m.server.base_url();
  REQUIRE(url.rfind("https://", 0) == 0);
  auto d = parse_report(run_cli({"bench", "--upstream", url, "--ca-file",
                                 test::tls_file("ca.pem"), "--requests", "40",
                                 "--concurrency", "8", "--connections", "2"}));
  CHECK(int_of(d, "ok") == 40);
  CHECK(errors_of(d).empty());
  // Requests of 64 texts of 400 bytes (bodies of about 27 KB, more than a
  // TLS record) on one connection: their bodies once never left after the
  // head (http_transport.cpp, write), and every request ran into its
  // deadline.
  auto before = m.server.stats().inputs;
  std::vector<std::string> args{"bench", "--upstream", url, "--ca-file",
                                test::tls_file("ca.pem")};
  for (auto* a : {"--requests", "12", "--concurrency", "4", "--connections",
                  "1", "--inputs", "64", "--text-bytes", "400", "--dims", "64",
                  "--warmup", "0", "--no-batching", "--deadline-ms", "10000"})
    args.emplace_back(a);
  auto large = parse_report(run_cli(args));
  CHECK(int_of(large, "ok") == 12);
  CHECK(errors_of(large).empty());
  CHECK(m.server.stats().inputs - before == 12 * 64);
  // Without the test CA the certificate is rejected: every request fails
  // with tls_failed, and the run still completes.
  auto bad = parse_report(
      run_cli({"bench", "--upstream", url, "--requests", "4", "--concurrency",
               "2", "--warmup", "0", "--deadline-ms", "3000"}));
  CHECK(int_of(bad, "ok") == 0);
  CHECK(errors_of(bad) == std::map<std::string, int64_t>{{"tls_failed", 4}});
}

TEST_CASE("embedrt bench finds its upstream in OPENAI_BASE_URL or embeds "
          "one") {
  {
    test::running_mock m;
    auto run = run_cli(
        {"bench", "--requests", "30", "--concurrency", "5", "--warmup", "3"},
        {"OPENAI_BASE_URL=" + m.server.base_url()});
    auto d = parse_report(run);
    CHECK(int_of(d, "ok") == 30);
    CHECK_FALSE(d["embedded_upstream"].GetBool());
    CHECK(m.server.stats().inputs == 33);
  }
  {
    auto run = run_cli({"bench", "--requests", "30", "--concurrency", "5"});
    auto d = parse_report(run);
    CHECK(int_of(d, "ok") == 30);
    CHECK(errors_of(d).empty());
    CHECK(d["embedded_upstream"].GetBool());
    CHECK_THAT(run.err, Catch::Contains("built-in upstream"));
  }
}

TEST_CASE("embedrt bench takes the API key from the environment only and "
          "never prints it") {
  test::running_mock m;
  const std::string key = "sk-bench-test-0123456789abcdef";
  for (const auto& [args, env] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{}, "OPENAI_API_KEY=" + key},
           {{"--api-key-env", "BENCH_TEST_KEY"}, "BENCH_TEST_KEY=" + key},
           {{"--log-level", "debug"}, "OPENAI_API_KEY=" + key}}) {
    std::vector<std::string> argv{
        "bench",         "--upstream", m.server.base_url(), "--requests", "20",
        "--concurrency", "4"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto run = run_cli(argv, {env});
    auto d = parse_report(run);
    CHECK(int_of(d, "ok") == 20);
    CHECK(run.out.find(key) == std::string::npos);
    CHECK(run.err.find(key) == std::string::npos);
  }
  // A missing variable is not an error (the built-in upstream needs none).
  auto run
      = run_cli({"bench", "--upstream", m.server.base_url(), "--requests", "5",
                 "--concurrency", "1", "--api-key-env", "BENCH_TEST_UNSET"});
  CHECK(int_of(parse_report(run), "ok") == 5);
  CHECK_THAT(run.err, Catch::Contains("BENCH_TEST_UNSET is not set"));
}

TEST_CASE("embedrt bench rejects bad usage with exit code 2") {
  struct bad_case {
    std::vector<std::string> args;
    const char* mentions;
  };
  for (const auto& [args, mentions] : std::vector<bad_case>{
           {{"--bogus"}, "unknown option '--bogus'"},
           {{"--api-key", "sk-x"}, "unknown option '--api-key'"},
           {{"--requests", "0"}, "--requests"},
           {{"--requests", "many"}, "--requests"},
           {{"--concurrency", "0"}, "--concurrency"},
           {{"--inputs", "0"}, "--inputs"},
           {{"--inputs", "3000"}, "--inputs"},
           {{"--dims", "-1"}, "--dims"},
           {{"--connections", "0"}, "--connections"},
           {{"--deadline-ms", "0"}, "--deadline-ms"},
           {{"--workers", "0"}, "--workers"},
           {{"--scheduler", "fifo"}, "--scheduler"},
           {{"--log-level", "loud"}, "--log-level"},
           {{"--upstream", ""}, "--upstream"},
           {{"--model", ""}, "--model"},
           {{"--no-batching=yes"}, "--no-batching"},
           {{"--requests"}, "--requests"}}) {
    std::vector<std::string> argv{"bench"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto run = run_cli(argv);
    INFO("args: " << args.front() << " stderr: " << run.err);
    CHECK(run.exit_code == 2);
    CHECK(run.out.empty());
    CHECK_THAT(run.err, Catch::Contains(mentions));
  }
  auto help = run_cli({"bench", "--help"});
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.out, Catch::StartsWith("usage: embedrt bench"));
}

TEST_CASE("embedrt bench reports a setup failure with exit code 1") {
  auto bad_url = run_cli({"bench", "--upstream", "ftp://127.0.0.1/v1"});
  CHECK(bad_url.exit_code == 1);
  CHECK(bad_url.out.empty());
  CHECK_THAT(bad_url.err, Catch::Contains("cannot set up the runtime"));
  auto bad_ca = run_cli({"bench", "--upstream", "https://127.0.0.1:9/v1",
                         "--ca-file", "/nonexistent/ca.pem"});
  CHECK(bad_ca.exit_code == 1);
  CHECK(bad_ca.out.empty());
  CHECK_THAT(bad_ca.err, Catch::Contains("tls_failed"));
  CHECK_THAT(bad_ca.err, Catch::Contains("/nonexistent/ca.pem"));
}
