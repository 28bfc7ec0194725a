// The embedding cache through the real processes: `embedrt embed` and
// `embedrt serve` in front of a real `embedrt mock`, whose /stats counts the
// inputs it was sent (docs/caching.md).
#include "embedrt/protocol/hash_embedder.hpp"
#include "serve_test_util.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <rapidjson/document.h>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using namespace std::chrono_literals;

namespace {

/// Without health checks: every input the mock counts is a caller's.
std::vector<std::string> quiet_env() {
  return clean_env({"EMBEDRT_HEALTH_CHECK_INTERVAL_MS=0"});
}

struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/embedrt-cache-cli-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::string cmd = "rm -rf '" + path + "'";
    [[maybe_unused]] auto rc = std::system(cmd.c_str());
  }
  std::string file(const std::string& name) const {
    return path + "/" + name;
  }
};

int64_t mock_inputs(uint16_t port) {
  http_client http{port};
  auto res = http.request("GET", "/stats");
  REQUIRE(res.status == 200);
  rapidjson::Document doc;
  doc.Parse(res.body.c_str());
  REQUIRE(doc.IsObject());
  return doc["inputs"].GetInt64();
}

void reset_mock(uint16_t port) {
  http_client http{port};
  REQUIRE(http.request("POST", "/stats/reset").status == 200);
}

/// A JSONL corpus: one {"id", "text"} per line.
void write_corpus(const std::string& path,
                  const std::vector<std::string>& texts) {
  std::ofstream out{path, std::ios::trunc};
  for (std::size_t i = 0; i < texts.size(); ++i)
    out << "{\"id\":\"doc-" << i << "\",\"text\":\"" << texts[i] << "\"}\n";
}

/// Checks that the output has one line per input, each with
/// hash_embed(text, 8) for its id.
void check_output(const std::string& path,
                  const std::vector<std::string>& texts) {
  std::ifstream in{path};
  std::string line;
  std::set<std::string> seen;
  while (std::getline(in, line)) {
    rapidjson::Document doc;
    doc.Parse(line.c_str());
    REQUIRE(doc.IsObject());
    std::string id = doc["id"].GetString();
    auto idx = std::stoul(id.substr(4));
    REQUIRE(idx < texts.size());
    auto want = hash_embed(texts[idx], 8);
    auto& arr = doc["embedding"];
    REQUIRE(arr.Size() == want.size());
    for (rapidjson::SizeType k = 0; k < arr.Size(); ++k)
      REQUIRE(std::abs(arr[k].GetDouble() - want[k]) < 1e-6);
    seen.insert(id);
  }
  CHECK(seen.size() == texts.size());
}

int run_embed(const std::vector<std::string>& args) {
  process p{args, quiet_env()};
  auto rc = p.wait_exit(60s);
  INFO("stderr: " << p.stderr_text());
  return rc;
}

std::vector<std::string> corpus(std::size_t n) {
  std::vector<std::string> texts;
  for (std::size_t i = 0; i < n; ++i)
    texts.push_back("record " + std::to_string(i) + " of the corpus");
  return texts;
}

} // namespace

TEST_CASE("embed --cache on: 50 % repeated texts send exactly the distinct "
          "texts upstream",
          "[cache]") {
  temp_dir dir;
  mock_proc mock{{"--latency-ms", "2"}};
  reset_mock(mock.port);
  std::vector<std::string> texts;
  for (std::size_t i = 0; i < 2000; ++i)
    texts.push_back("text " + std::to_string(i % 1000));
  write_corpus(dir.file("in.jsonl"), texts);
  REQUIRE(
      run_embed({"embed", "--in", dir.file("in.jsonl"), "--out",
                 dir.file("out.jsonl"), "--upstream", mock.url, "--dims", "8",
                 "--batch", "20", "--concurrency", "8", "--cache", "on"})
      == 0);
  check_output(dir.file("out.jsonl"), texts);
  CHECK(mock_inputs(mock.port) == 1000);
}

TEST_CASE("embed with a persistent cache: a rerun sends nothing upstream, "
          "10 % changed pays for 10 %",
          "[cache]") {
  temp_dir dir;
  mock_proc mock;
  auto texts = corpus(3000);
  write_corpus(dir.file("in.jsonl"), texts);
  auto embed = [&](const std::string& out) {
    return run_embed({"embed", "--in", dir.file("in.jsonl"), "--out", out,
                      "--upstream", mock.url, "--dims", "8", "--cache-path",
                      dir.file("store")});
  };
  reset_mock(mock.port);
  REQUIRE(embed(dir.file("out1.jsonl")) == 0);
  check_output(dir.file("out1.jsonl"), texts);
  CHECK(mock_inputs(mock.port) == 3000);
  reset_mock(mock.port);
  REQUIRE(embed(dir.file("out2.jsonl")) == 0);
  check_output(dir.file("out2.jsonl"), texts);
  CHECK(mock_inputs(mock.port) == 0);
  for (std::size_t i = 0; i < texts.size(); i += 10)
    texts[i] = "changed record " + std::to_string(i);
  write_corpus(dir.file("in.jsonl"), texts);
  reset_mock(mock.port);
  REQUIRE(embed(dir.file("out3.jsonl")) == 0);
  check_output(dir.file("out3.jsonl"), texts);
  CHECK(mock_inputs(mock.port) == 300);
}

TEST_CASE("serve with a persistent cache: SIGKILLed mid-load, restarted, "
          "the store opens and serves hits",
          "[cache]") {
  temp_dir dir;
  mock_proc mock{{"--latency-ms", "5"}};
  auto texts = corpus(4000);
  std::vector<std::string> served; // answered 200 before the kill
  {
    serve_proc serve{
        {"--upstream", mock.url, "--cache-path", dir.file("store")},
        quiet_env()};
    std::atomic<bool> stop{false};
    std::vector<std::thread> load;
    std::vector<std::vector<std::string>> done(4);
    for (std::size_t t = 0; t < 4; ++t)
      load.emplace_back([&, t] {
        http_client c{serve.port};
        for (std::size_t i = t * 1000; i < (t + 1) * 1000 && !stop; i += 10) {
          std::string body = "{\"model\":\"m\",\"dimensions\":8,\"input\":[";
          for (std::size_t k = i; k < i + 10; ++k)
            body += (k > i ? ",\"" : "\"") + texts[k] + "\"";
          body += "]}";
          auto res = c.embed(body, {}, 5s);
          if (res.status != 200)
            break;
          done[t].insert(done[t].end(), texts.begin() + i,
                         texts.begin() + i + 10);
        }
      });
    // Kill it while the load runs (after some requests were answered).
    auto deadline = steady_clock::now() + 20s;
    while (steady_clock::now() < deadline && mock_inputs(mock.port) < 1500)
      std::this_thread::sleep_for(5ms);
    serve.proc.signal(SIGKILL);
    stop = true;
    for (auto& th : load)
      th.join();
    for (auto& d : done)
      served.insert(served.end(), d.begin(), d.end());
    REQUIRE(served.size() >= 500);
  }
  // The store opens after the kill; what was committed serves hits. Every
  // answered input was committed unless its write batch was still in
  // flight at the kill: at most the last batches.
  serve_proc serve{{"--upstream", mock.url, "--cache-path", dir.file("store")},
                   quiet_env()};
  reset_mock(mock.port);
  http_client c{serve.port};
  std::size_t asked = 0;
  for (std::size_t i = 0; i + 10 <= served.size(); i += 10) {
    std::string body = "{\"model\":\"m\",\"dimensions\":8,\"input\":[";
    for (std::size_t k = i; k < i + 10; ++k)
      body += (k > i ? ",\"" : "\"") + served[k] + "\"";
    body += "]}";
    auto res = c.embed(body, {}, 10s);
    auto vecs = vectors_of(res, 10, 8);
    for (std::size_t k = 0; k < 10; ++k)
      REQUIRE(vecs[k] == hash_embed(served[i + k], 8));
    asked += 10;
  }
  auto upstream = mock_inputs(mock.port);
  INFO("asked " << asked << ", sent upstream after the restart " << upstream);
  CHECK(upstream < static_cast<int64_t>(asked) / 4);
  auto metrics = c.request("GET", "/metrics");
  CHECK(metrics.body.find("embedrt_cache_persistent_hits_total")
        != std::string::npos);
}
