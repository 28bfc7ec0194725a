// A cluster of real processes on loopback: a front `embedrt serve` (a pure
// router, published with --caf-port) over two worker `embedrt serve` nodes,
// each in front of its own `embedrt mock`. The test process is a host
// application: it reaches the front with embedrt::enable_distribution +
// embedrt::connect and drives N requests at 64 in flight through
// embedrt::client. Mid-run one worker is SIGKILLed and, after a moment,
// started again on the same CAF port. That worker's mock answers after
// 100 ms, and the kill waits until the front routes to it ("up" in its
// health), so that it always holds requests when it dies: a busy machine
// can delay a status reply past the front's 250 ms poll, and a worker the
// front calls unresponsive meanwhile gets no new requests (a zero-latency
// worker then holds none within a millisecond).
//
// The ledger: every request answered exactly once, with the vector the mock
// computes for its own text (hash_embed), never later than its deadline +
// 50 ms; the killed worker's requests re-routed (all N succeed: the other
// worker stays up); the front counted N requests and some re-routes; the
// restarted worker receives work again (replies tagged with its address
// after the restart, and its own /metrics).
//
// The short run (20,000 requests) is in the default suite; the long one
// (200,000) is the hidden "[long]" case, registered as `app.cluster_long`
// with -DEMBEDRT_LONG_TESTS=ON (docs/testing.md).
#include "embedrt/all.hpp"
#include "embedrt/protocol/hash_embedder.hpp"
#include "serve_test_util.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <optional>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

constexpr std::size_t concurrency = 64;
constexpr std::size_t dims = 8;
constexpr milliseconds deadline{5000};
/// A reply may come this much after its deadline (the client's clock vs the
/// router's, one message hop, the callback's scheduling).
constexpr milliseconds reply_slack{50};

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, read,
/// closed): the CAF ports must be known before a node starts, and a worker
/// must come back on the same one.
uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string peer_of(uint16_t port) {
  return "127.0.0.1:" + std::to_string(port);
}

/// `embedrt serve` published on `caf_port`: "published on caf://..." and
/// then "listening on http://..." on stdout.
struct node_proc {
  node_proc(std::vector<std::string> extra, uint16_t caf_port)
      : proc([&] {
          std::vector<std::string> args{
              "serve", "--listen",   "127.0.0.1:0",           "--log-level",
              "warn",  "--caf-port", std::to_string(caf_port)};
          args.insert(args.end(), extra.begin(), extra.end());
          return process{args};
        }()) {
    auto line = proc.read_line(std::chrono::seconds{20});
    REQUIRE(line);
    REQUIRE(*line == "published on caf://" + peer_of(caf_port));
    http_port = proc.wait_listening();
  }
  process proc;
  uint16_t http_port = 0;
};

/// (On the heap: a process must not be copied, its copy would kill it.)
std::unique_ptr<node_proc> start_worker(const mock_proc& mock,
                                        uint16_t caf_port) {
  return std::make_unique<node_proc>(
      std::vector<std::string>{"--upstream", mock.url}, caf_port);
}

/// One request's line in the ledger. Written by its first reply only.
struct entry {
  steady_clock::time_point sent;
  std::atomic<int> replies{0};
  milliseconds took{0};
  bool ok = false;
  bool vector_ok = false;
  std::string error;
  std::string upstream;
  /// Answered after the killed worker was started again.
  bool after_restart = false;
};

/// Keeps `concurrency` requests in flight through `embedrt::client`: each
/// reply's callback (on a CAF worker thread) records it and sends the next
/// request. Requests from `gate_at` on are held until open_gate().
class driver {
 public:
  driver(client& c, std::size_t n, std::size_t gate_at, std::size_t kill_at)
      : c_(c), n_(n), gate_at_(gate_at), kill_at_(kill_at), ledger_(n) {
    // nop
  }

  void start() {
    for (std::size_t i = 0; i < concurrency; ++i)
      next();
  }

  /// Releases the held requests.
  void open_gate() {
    std::vector<std::size_t> held;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      gate_open_ = true;
      held.swap(held_);
    }
    for (auto i : held)
      send(i);
  }

  std::size_t held() {
    std::lock_guard<std::mutex> guard{mtx_};
    return held_.size();
  }

  void mark_restarted() {
    restarted_ = true;
  }

  std::future<void> kill_point() {
    return kill_point_.get_future();
  }

  std::future<void> all_answered() {
    return done_.get_future();
  }

  std::vector<entry>& ledger() {
    return ledger_;
  }

 private:
  void next() {
    auto i = issued_.fetch_add(1);
    if (i >= n_)
      return;
    if (i >= gate_at_) {
      std::lock_guard<std::mutex> guard{mtx_};
      if (!gate_open_) {
        held_.push_back(i);
        return;
      }
    }
    send(i);
  }

  void send(std::size_t i) {
    embed_request req;
    req.model = "text-embedding-3-small";
    req.inputs = {"text-" + std::to_string(i)};
    req.dimensions = static_cast<int32_t>(dims);
    req.timeout = deadline;
    req.request_id = "cluster-" + std::to_string(i);
    ledger_[i].sent = steady_clock::now();
    c_.embed(std::move(req), [this, i](caf::expected<embed_result> res) {
      on_reply(i, std::move(res));
    });
  }

  void on_reply(std::size_t i, caf::expected<embed_result> res) {
    auto& e = ledger_[i];
    if (e.replies.fetch_add(1) != 0)
      return; // A duplicate: counted, nothing else recorded.
    e.took = std::chrono::duration_cast<milliseconds>(steady_clock::now()
                                                      - e.sent);
    e.after_restart = restarted_.load();
    if (res) {
      e.ok = true;
      e.upstream = res->upstream;
      e.vector_ok = res->embeddings.size() == 1
          && res->embeddings[0]
              == hash_embed("text-" + std::to_string(i), dims);
    } else {
      e.error = render_error(res.error());
    }
    // The next request first: once the last reply is counted, the test may
    // go on and destroy the driver, so nothing touches it after that.
    next();
    auto answered = answered_.fetch_add(1) + 1;
    if (answered == kill_at_)
      kill_point_.set_value();
    if (answered == n_)
      done_.set_value();
  }

  client& c_;
  const std::size_t n_;
  const std::size_t gate_at_;
  const std::size_t kill_at_;
  std::vector<entry> ledger_;
  std::atomic<std::size_t> issued_{0};
  std::atomic<std::size_t> answered_{0};
  std::atomic<bool> restarted_{false};
  std::promise<void> kill_point_;
  std::promise<void> done_;
  std::mutex mtx_;
  bool gate_open_ = false;
  std::vector<std::size_t> held_;
};

/// The state of the front's member `name` in its health ("" if absent).
std::string member_state(client& c, const std::string& name) {
  auto h = c.health(milliseconds{2000});
  if (!h)
    return "";
  for (auto& u : h->upstreams)
    if (u.name == name)
      return u.state;
  return "";
}

/// Polls the front's health until `name` is "up" or, with `probing`, also
/// "half_open" (its breaker, opened by the loss, lets probes through: the
/// next requests close it); false after `limit`.
bool wait_member_up(client& c, const std::string& name, milliseconds limit,
                    bool probing = false) {
  auto until = steady_clock::now() + limit;
  while (steady_clock::now() < until) {
    auto state = member_state(c, name);
    if (state == "up" || (probing && state == "half_open"))
      return true;
    std::this_thread::sleep_for(milliseconds{20});
  }
  return false;
}

/// The value of an unlabelled-or-summed counter in a Prometheus text: the
/// sum of every sample line of `metric`.
double prometheus_sum(const std::string& text, const std::string& metric) {
  double sum = 0;
  std::size_t at = 0;
  while ((at = text.find(metric, at)) != std::string::npos) {
    bool line_start = at == 0 || text[at - 1] == '\n';
    auto after = at + metric.size();
    auto eol = text.find('\n', at);
    if (line_start && after < text.size()
        && (text[after] == '{' || text[after] == ' ')) {
      auto line = text.substr(at, eol - at);
      sum += std::stod(line.substr(line.rfind(' ') + 1));
    }
    at = eol == std::string::npos ? text.size() : eol;
  }
  return sum;
}

void run_cluster(std::size_t n) {
  mock_proc mock1;
  mock_proc mock2{{"--latency-ms", "100"}};
  auto caf1 = free_port();
  auto caf2 = free_port();
  auto caf_front = free_port();
  auto worker1 = start_worker(mock1, caf1);
  auto worker2 = start_worker(mock2, caf2);
  node_proc front{{"--peer", peer_of(caf1), "--peer", peer_of(caf2)},
                  caf_front};

  caf::actor_system_config cfg;
  register_types(cfg);
  REQUIRE_FALSE(enable_distribution(cfg));
  caf::actor_system sys{cfg};
  auto svc = connect(sys, "127.0.0.1", caf_front);
  INFO("connect: " << (svc ? std::string{"ok"} : render_error(svc.error())));
  REQUIRE(svc);
  client c{sys, *svc, deadline};
  REQUIRE(wait_member_up(c, peer_of(caf1), milliseconds{10000}));
  REQUIRE(wait_member_up(c, peer_of(caf2), milliseconds{10000}));

  // Kill at 20 % answered; the last 30 % wait until the restarted worker is
  // up again, so that it must take part of them.
  driver d{c, n, n * 7 / 10, n / 5};
  auto kill_point = d.kill_point();
  auto done = d.all_answered();
  auto t0 = steady_clock::now();
  d.start();
  REQUIRE(kill_point.wait_for(std::chrono::seconds{120})
          == std::future_status::ready);
  // Routed to now, so it holds requests for the next 100 ms.
  REQUIRE(wait_member_up(c, peer_of(caf2), milliseconds{10000}));
  worker2->proc.signal(SIGKILL);
  CHECK(worker2->proc.wait_exit(milliseconds{5000}) == -1);
  worker2.reset();
  std::this_thread::sleep_for(milliseconds{300});
  worker2 = start_worker(mock2, caf2);
  d.mark_restarted();
  CHECK(wait_member_up(c, peer_of(caf2), milliseconds{15000}, true));
  d.open_gate();
  REQUIRE(done.wait_for(std::chrono::seconds{300})
          == std::future_status::ready);
  auto run_time = steady_clock::now() - t0;
  WARN(n << " requests in "
         << std::chrono::duration_cast<milliseconds>(run_time).count()
         << " ms");

  // The ledger.
  std::size_t lost = 0, duplicated = 0, failed = 0, wrong = 0, late = 0;
  std::size_t by_restarted = 0, by_worker1 = 0;
  milliseconds slowest{0};
  std::string first_error;
  const auto w1 = peer_of(caf1) + "/";
  const auto w2 = peer_of(caf2) + "/";
  for (auto& e : d.ledger()) {
    auto r = e.replies.load();
    if (r == 0) {
      ++lost;
      continue;
    }
    if (r > 1)
      ++duplicated;
    if (!e.ok) {
      ++failed;
      if (first_error.empty())
        first_error = e.error;
    } else if (!e.vector_ok) {
      ++wrong;
    }
    if (e.took > deadline + reply_slack)
      ++late;
    slowest = std::max(slowest, e.took);
    if (e.upstream.rfind(w1, 0) == 0)
      ++by_worker1;
    if (e.after_restart && e.upstream.rfind(w2, 0) == 0)
      ++by_restarted;
  }
  INFO("first error: " << first_error << "; slowest reply " << slowest.count()
                       << " ms");
  CHECK(lost == 0);
  CHECK(duplicated == 0);
  CHECK(failed == 0);
  CHECK(wrong == 0);
  CHECK(late == 0);
  CHECK(by_worker1 > 0);
  CHECK(by_restarted > 0);

  // The front counted each request once and re-routed the killed worker's.
  auto snap = c.metrics();
  REQUIRE(snap);
  int64_t front_requests = 0, front_ok = 0, front_retries = 0;
  for (auto& rc : snap->requests) {
    front_requests += rc.requests;
    if (rc.outcome == "ok")
      front_ok += rc.requests;
    front_retries += rc.retries;
  }
  CHECK(front_requests == static_cast<int64_t>(n));
  CHECK(front_ok == static_cast<int64_t>(n));
  CHECK(front_retries > 0);

  // The restarted worker's own count of requests it served.
  http_client restarted{worker2->http_port};
  auto res = restarted.request("GET", "/metrics");
  REQUIRE(res.status == 200);
  auto served = prometheus_sum(res.body, "embedrt_requests_total");
  CHECK(served >= static_cast<double>(by_restarted));
  CHECK(served > 0);
  WARN("killed worker: " << front_retries << " re-routes at the front; "
                         << "restarted worker served " << served
                         << " requests; slowest reply " << slowest.count()
                         << " ms");
}

} // namespace

TEST_CASE("cluster: 20,000 requests through a front over two workers, one "
          "killed and restarted mid-run") {
  run_cluster(20'000);
}

TEST_CASE("cluster: 200,000 requests through a front over two workers, one "
          "killed and restarted mid-run",
          "[.][long]") {
  run_cluster(200'000);
}
