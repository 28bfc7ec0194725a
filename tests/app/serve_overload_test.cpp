// Overload of `embedrt serve` (issue 15, "Overload"): 10 x its capacity
// offered for a while, with batching off and on. The excess must be refused
// `overloaded` (429) at once, what is accepted must complete within its
// deadline, the process must stay under a memory cap, and once the load
// stops nothing may be left in flight. The short run (3 s each) is part of
// the default suite; the long one (30 s each) is the hidden "[long]" case,
// registered as `app.serve_overload_long` with -DEMBEDRT_LONG_TESTS=ON
// (docs/testing.md, docs/reliability.md "Overload").
#include "serve_load_util.hpp"
#include "serve_test_util.hpp"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

/// One request of the run: its status, error code and how long it took.
struct outcome {
  int status = 0;
  std::string code;
  int retry_after = 0;
  milliseconds took{};
};

/// `threads` clients, each on its own keep-alive connection, each sending
/// one request every `period` for `duration`: the offered rate is threads /
/// period. A client still waiting for an answer skips the slots it missed
/// (so the rate offered is what was sent: the results' count).
std::vector<outcome> offer(uint16_t port, int threads, milliseconds period,
                           milliseconds duration, milliseconds deadline) {
  std::vector<std::vector<outcome>> per(static_cast<std::size_t>(threads));
  std::vector<std::thread> workers;
  auto start = steady_clock::now() + milliseconds{200};
  auto end = start + duration;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      http_client c{port};
      c.connect();
      auto body = embed_body({"load " + std::to_string(t)}, 8);
      header_list headers{
          {"x-embedrt-timeout-ms", std::to_string(deadline.count())}};
      // Spread the clients over one period.
      auto next = start + period * t / threads;
      while (next < end) {
        std::this_thread::sleep_until(next);
        auto t0 = steady_clock::now();
        auto res = c.embed(body, headers, deadline + milliseconds{5000});
        outcome o;
        o.status = res.status;
        o.took = std::chrono::duration_cast<milliseconds>(steady_clock::now()
                                                          - t0);
        if (res.status != 200 && res.status != 0) {
          if (auto e = openai::decode_error(res.body))
            o.code = e->code;
          if (res.has_header("retry-after"))
            o.retry_after = std::stoi(res.header("retry-after"));
        }
        per[static_cast<std::size_t>(t)].push_back(std::move(o));
        next += period;
        while (next < steady_clock::now())
          next += period;
      }
    });
  for (auto& w : workers)
    w.join();
  std::vector<outcome> all;
  for (auto& v : per)
    all.insert(all.end(), v.begin(), v.end());
  return all;
}

milliseconds percentile(std::vector<milliseconds> xs, double p) {
  if (xs.empty())
    return milliseconds{0};
  std::sort(xs.begin(), xs.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(xs.size() - 1));
  return xs[i];
}

/// Runs 10 x capacity for `duration` and checks the outcome. Capacity: 40
/// requests/s either way — batching off: 4 connections, 100 ms a call;
/// batching on: 1 connection carrying up to 32 requests a call (the TEI
/// profile's batch limit), 800 ms a call.
void overload_run(bool batching, milliseconds duration) {
  mock_proc mock{{"--latency-ms", batching ? "800" : "100"}};
  std::string upstream = "[upstream slow]\nbase_url = " + mock.url + "\n";
  upstream += batching ? "connections = 1\nbatching = true\nprovider = tei\n"
                       : "connections = 4\nbatching = false\n";
  temp_config file{upstream};
  serve_proc serve{{"--config", file.path}};
  auto pid = serve.proc.pid();
  {
    // The service rate is learned from these (deadline-aware admission).
    http_client warm{serve.port};
    for (int i = 0; i < 4; ++i)
      REQUIRE(warm.embed(embed_body({"warm"}, 8)).status == 200);
  }
  constexpr double capacity = 40; // requests/s
  const milliseconds deadline{2000};
  // 280 clients x 2 requests/s = 560/s nominal; about 50 of them wait for
  // an accepted request at any time and skip their slots: about 10 x
  // capacity is offered.
  auto results = offer(serve.port, 280, milliseconds{500}, duration, deadline);
  std::size_t ok = 0;
  std::size_t late = 0;
  std::vector<milliseconds> rejected;
  std::vector<milliseconds> accepted;
  for (const auto& o : results) {
    INFO("status " << o.status << " code " << o.code << " after "
                   << o.took.count() << " ms");
    if (o.status == 200) {
      ++ok;
      accepted.push_back(o.took);
      // Accepted work completes within its deadline (plus scheduling slack
      // on a shared machine).
      CHECK(o.took <= deadline + scheduling_slack);
    } else if (o.status == 429) {
      CHECK(o.code == "overloaded");
      CHECK(o.retry_after >= 1);
      rejected.push_back(o.took);
    } else {
      CHECK(o.status == 504);
      ++late;
    }
  }
  auto offered = results.size();
  auto seconds = static_cast<double>(duration.count()) / 1000.0;
  auto p50 = percentile(rejected, 0.5);
  auto p99 = percentile(rejected, 0.99);
  auto hwm = mib(proc_status_kib(pid, "VmHWM"));
  WARN((batching ? "batching on" : "batching off")
       << ": offered " << offered << " in " << seconds << " s, ok " << ok
       << ", overloaded " << rejected.size() << ", 504 " << late
       << "; rejection p50 " << p50.count() << " ms, p99 " << p99.count()
       << " ms; accepted p99 " << percentile(accepted, 0.99).count()
       << " ms; serve peak RSS " << hwm << " MiB");
  // The overload happened: at least 5 x capacity was offered (2 x from a
  // client slowed down by a sanitizer).
  CHECK(static_cast<double>(offered)
        >= least_overload_factor * capacity * seconds);
  // About capacity x duration succeed (at least half of it on a loaded
  // machine, at most what the deadlines allow beyond it); most of the
  // excess is refused, few wait for a 504.
  CHECK(static_cast<double>(ok) >= capacity * seconds / 2);
  auto most_served = capacity * (seconds + 2 * 2) + 32;
  CHECK(static_cast<double>(ok) <= most_served);
  CHECK(static_cast<double>(rejected.size())
        >= (static_cast<double>(offered) - most_served) / 2);
  // (Admission by count alone would queue the excess: nearly all of it
  // would wait for its 504. On a machine shared with builds up to 5 % of
  // what is offered has been seen to miss its deadline.)
  CHECK(late <= std::max<std::size_t>(5, offered / 10));
  // Refused at once, not after a wait in the queue: a generous bound (the
  // recorded p99 is in docs/reliability.md).
  CHECK(p99 < milliseconds{500});
  if (memory_figures_meaningful)
    CHECK(hwm < 128);
  // Idle afterwards: nothing left in flight, and a request goes through.
  CHECK(wait_metric(serve.port, "embedrt_requests_in_flight", 0,
                    milliseconds{5000})
        == 0.0);
  http_client after{serve.port};
  CHECK(after.embed(embed_body({"after"}, 8)).status == 200);
}

} // namespace

TEST_CASE("serve: 10x overload for 3 s, batching off: the excess gets 429 "
          "overloaded at once, accepted requests meet their deadline") {
  overload_run(false, milliseconds{3000});
}

TEST_CASE("serve: 10x overload for 3 s, batching on: the excess gets 429 "
          "overloaded at once, accepted requests meet their deadline") {
  overload_run(true, milliseconds{3000});
}

TEST_CASE("serve: 10x overload for 30 s each, batching off and on",
          "[.][long]") {
  overload_run(false, milliseconds{30000});
  overload_run(true, milliseconds{30000});
}
