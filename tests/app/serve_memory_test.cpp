// Memory of `embedrt serve` under large responses (issue 15): the node's
// budget of response bytes in flight (app/serve/response_budget.hpp), the
// streamed (chunked) response body, and memory given back after the load.
// The budget alone, then the real `embedrt serve` in front of the real
// `embedrt mock`, its memory read from /proc/PID/status.
#include "embedrt/protocol/hash_embedder.hpp"
#include "serve/response_budget.hpp"
#include "serve_load_util.hpp"
#include "serve_test_util.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using embedrt::serve::response_budget;
using embedrt::serve::response_estimate;
using std::chrono::milliseconds;

TEST_CASE("response budget: refuses what would exceed it, admits a request "
          "alone, gives back at release") {
  auto budget = std::make_shared<response_budget>(1000, 0);
  auto a = budget->acquire(600);
  REQUIRE(a);
  CHECK(budget->held() == 600);
  CHECK_FALSE(budget->acquire(500));
  CHECK(budget->refusals() == 1);
  auto b = budget->acquire(400);
  REQUIRE(b);
  CHECK(budget->held() == 1000);
  a.reset();
  CHECK(budget->held() == 400);
  // The true size once known, smaller or larger; never refused.
  b->resize(100);
  CHECK(budget->held() == 100);
  b->resize(1200);
  CHECK(budget->held() == 1200);
  // Moved, it gives back once.
  auto moved = std::move(*b);
  b.reset();
  CHECK(budget->held() == 1200);
  moved.release();
  CHECK(budget->held() == 0);
  // Alone, a request larger than the whole budget still goes; then nothing
  // else does.
  auto big = budget->acquire(5000);
  REQUIRE(big);
  CHECK_FALSE(budget->acquire(1));
  big.reset();
  CHECK(budget->acquire(1000));
  CHECK(budget->held() == 0);
  CHECK(budget->refusals() == 2);
  // No limit: everything goes, and is still counted.
  auto open = std::make_shared<response_budget>(0, 0);
  auto x = open->acquire(uint64_t{1} << 40);
  auto y = open->acquire(uint64_t{1} << 40);
  REQUIRE((x && y));
  CHECK(open->held() == uint64_t{1} << 41);
}

TEST_CASE("response budget: the heap is trimmed when the last lease goes "
          "after enough was released") {
  auto budget = std::make_shared<response_budget>(0, 100);
  {
    auto a = budget->acquire(60);
    auto b = budget->acquire(60);
    a.reset();
    CHECK(budget->trims() == 0); // b still held
  }
  CHECK(budget->trims() == 1);
  // 10 bytes since: not worth a trim.
  budget->acquire(10);
  CHECK(budget->trims() == 1);
  budget->acquire(95);
  CHECK(budget->trims() == 2);
}

TEST_CASE("response budget: the estimate counts floats and one encoded copy") {
  // 2,048 x 3,072 floats: 4 bytes each, plus 12 of text or 16/3 of base64,
  // plus 64 a vector.
  uint64_t values = 2048 * 3072;
  CHECK(response_estimate(2048, 3072, false) == values * 16 + 2048 * 64);
  CHECK(response_estimate(2048, 3072, true)
        == values * 4 + values * 16 / 3 + 2048 * 64);
  CHECK(response_estimate(0, 3072, true) == 0);
}

namespace {

std::vector<std::string> numbered_texts(std::size_t n) {
  std::vector<std::string> texts;
  for (std::size_t i = 0; i < n; ++i)
    texts.push_back("text number " + std::to_string(i));
  return texts;
}

constexpr const char* held_metric = "embedrt_gateway_response_bytes_held";

} // namespace

TEST_CASE("serve: a 2,048 x 3,072 response is streamed in chunks, parallel "
          "ones beyond the budget get 429 overloaded, peak RSS stays under "
          "the budget and falls back after the load") {
  // The mock's latency keeps each admitted request's lease for at least
  // 300 ms, so requests sent together overlap.
  mock_proc mock{{"--latency-ms", "300"}};
  serve_proc serve{{"--upstream", mock.url}};
  auto pid = serve.proc.pid();
  http_client client{serve.port};
  REQUIRE(client.embed(embed_body({"warm up"}, 8)).status == 200);
  auto idle_kib = proc_status_kib(pid, "VmRSS");
  auto texts = numbered_texts(2048);
  auto body = embed_body(texts, 3072);
  for (bool base64 : {false, true}) {
    INFO((base64 ? "base64" : "float"));
    auto res = client.embed(embed_body(texts, 3072, base64), {}, 60s);
    REQUIRE(res.status == 200);
    CHECK(res.header("transfer-encoding") == "chunked");
    CHECK_FALSE(res.has_header("content-length"));
    auto vectors = vectors_of(res, 2048, 3072, base64);
    CHECK(vectors[0] == hash_embed(texts[0], 3072));
    CHECK(vectors[2047] == hash_embed(texts[2047], 3072));
  }
  // A small reply keeps its Content-Length.
  auto small = client.embed(embed_body({"small"}, 8));
  CHECK(small.has_header("content-length"));
  // 8 at once: each is estimated at about 100 MB (2,048 x 3,072 floats
  // held plus their float text), so two fit in the default 256 MiB.
  auto results = concurrently(serve.port, 8, body, {}, milliseconds{60000});
  int ok = 0;
  int overloaded = 0;
  for (const auto& res : results) {
    INFO("status " << res.status << ": " << res.body.substr(0, 300));
    if (res.status == 200) {
      ++ok;
      CHECK(vectors_of(res, 2048, 3072)[5] == hash_embed(texts[5], 3072));
    } else {
      REQUIRE(res.status == 429);
      ++overloaded;
      CHECK(error_of(res).code == "overloaded");
      CHECK(std::stoi(res.header("retry-after")) >= 1);
    }
  }
  CHECK(ok >= 1);
  CHECK(overloaded >= 1);
  // Every lease is given back once the replies are written.
  CHECK(wait_metric(serve.port, held_metric, 0, milliseconds{5000}) == 0.0);
  auto metrics = client.request("GET", "/metrics").body;
  CHECK(metric_value(metrics, "embedrt_gateway_budget_refusals_total")
        == static_cast<double>(overloaded));
  CHECK(metric_value(metrics, "embedrt_gateway_response_budget_bytes")
        == static_cast<double>(response_budget::default_limit));
  auto peak_kib = proc_status_kib(pid, "VmHWM");
  auto after_kib = proc_status_kib(pid, "VmRSS");
  WARN("serve RSS: idle " << mib(idle_kib) << " MiB, peak " << mib(peak_kib)
                          << " MiB, after " << mib(after_kib) << " MiB; " << ok
                          << " ok, " << overloaded << " overloaded");
  if (memory_figures_meaningful) {
    // Before the budget and the streamed body, 8 such requests took the
    // process past 500 MiB; now the whole process stays under the budget.
    CHECK(mib(peak_kib) < 256);
    // The heap is trimmed once the last reply is written; what stays are
    // the runtime's and the allocator's caches (docs/reliability.md,
    // "Memory"): at most 64 MiB above idle.
    CHECK(mib(after_kib - idle_kib) < 64);
  }
  CHECK(client.embed(embed_body({"after"}, 8)).status == 200);
}

TEST_CASE("serve: response_budget_bytes in the config file sets the budget, "
          "a request alone always goes") {
  mock_proc mock;
  temp_config file{"[serve]\nresponse_budget_bytes = 1048576\n[upstream m]\n"
                   "base_url = "
                   + mock.url + "\n"};
  serve_proc serve{{"--config", file.path}};
  http_client client{serve.port};
  // About 4 MB estimated, four times the budget: alone, it goes.
  auto res = client.embed(embed_body(numbered_texts(100), 3072), {}, 30s);
  CHECK(res.status == 200);
  auto metrics = client.request("GET", "/metrics").body;
  CHECK(metric_value(metrics, "embedrt_gateway_response_budget_bytes")
        == 1048576.0);
  CHECK(wait_metric(serve.port, held_metric, 0, milliseconds{5000}) == 0.0);
}

TEST_CASE("serve: an HTTP/1.0 client gets a large reply whole, with "
          "Content-Length (no chunked framing)") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url}};
  // 300 x 3,072 floats as text: well over the streaming threshold.
  auto texts = numbered_texts(300);
  auto body = embed_body(texts, 3072);
  tcp_conn conn{serve.port};
  conn.send_text("POST /v1/embeddings HTTP/1.0\r\nHost: x\r\nContent-Type: "
                 "application/json\r\nContent-Length: "
                 + std::to_string(body.size()) + "\r\n\r\n" + body);
  bool closed = false;
  auto reply = conn.read_all(milliseconds{30000}, closed);
  CHECK(closed);
  REQUIRE(statuses(reply) == std::vector<int>{200});
  auto end = reply.find("\r\n\r\n");
  REQUIRE(end != std::string::npos);
  auto head = reply.substr(0, end);
  INFO(head);
  CHECK_THAT(head, !Catch::Contains("chunked"));
  auto cl = head.find("Content-Length: ");
  REQUIRE(cl != std::string::npos);
  auto length = std::stoul(head.substr(cl + 16));
  http_response res;
  res.status = 200;
  res.body = reply.substr(end + 4);
  CHECK(res.body.size() == length);
  CHECK(vectors_of(res, 300, 3072)[299] == hash_embed(texts[299], 3072));
}
