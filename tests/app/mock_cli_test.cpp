// Runs the real `embedrt` binary (EMBEDRT_CLI_PATH) as a subprocess.
#include "embedrt/protocol/hash_embedder.hpp"
#include "embedrt/protocol/openai.hpp"
#include "mock_test_client.hpp"
#include "spawn_util.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <fcntl.h>
#include <future>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

using namespace embedrt;
using namespace embedrt::test;

namespace {

/// A child process with its stdout and stderr connected to pipes.
class child_process {
 public:
  explicit child_process(std::vector<std::string> args) {
    args.insert(args.begin(), EMBEDRT_CLI_PATH);
    auto child = test::spawn_with_pipes(std::move(args), environ);
    REQUIRE(child.rc == 0);
    pid_ = child.pid;
    out_ = child.out;
    err_ = child.err;
  }

  ~child_process() {
    if (pid_ > 0 && !exit_status_) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    close(out_);
    close(err_);
  }

  /// Reads one line from stdout (without the newline); std::nullopt on EOF
  /// or timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = out_buf_.find('\n'); nl != std::string::npos) {
        auto line = out_buf_.substr(0, nl);
        out_buf_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        return std::nullopt;
      pollfd pfd{out_, POLLIN, 0};
      if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
        continue;
      char buf[512];
      auto n = read(out_, buf, sizeof(buf));
      if (n <= 0)
        return std::nullopt;
      out_buf_.append(buf, static_cast<std::size_t>(n));
    }
  }

  /// Everything the child wrote to stderr (call after it exited).
  std::string stderr_text() {
    std::string text;
    char buf[512];
    ssize_t n = 0;
    while ((n = read(err_, buf, sizeof(buf))) > 0)
      text.append(buf, static_cast<std::size_t>(n));
    return text;
  }

  void signal(int sig) {
    kill(pid_, sig);
  }

  /// Waits for the exit; returns the exit code, or -1 if the child did not
  /// exit within the timeout (it is then killed) or died from a signal.
  int wait_exit(std::chrono::milliseconds timeout) {
    auto pid = pid_;
    auto waiter = std::async(std::launch::async, [pid] {
      int status = 0;
      waitpid(pid, &status, 0);
      return status;
    });
    if (waiter.wait_for(timeout) != std::future_status::ready)
      kill(pid_, SIGKILL);
    exit_status_ = waiter.get();
    if (!WIFEXITED(*exit_status_))
      return -1;
    return WEXITSTATUS(*exit_status_);
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int err_ = -1;
  std::string out_buf_;
  std::optional<int> exit_status_;
};

uint16_t port_of(const std::string& url) {
  // "http://127.0.0.1:PORT/v1"
  auto colon = url.rfind(':');
  auto slash = url.find('/', colon);
  return static_cast<uint16_t>(
      std::stoi(url.substr(colon + 1, slash - colon - 1)));
}

} // namespace

TEST_CASE("embedrt mock runs as a process and exits 0 on SIGTERM") {
  child_process child{
      {"mock", "--listen", "127.0.0.1:0", "--dims-default", "16"}};
  auto line = child.read_line(10s);
  REQUIRE(line);
  const std::string prefix = "listening on http://127.0.0.1:";
  REQUIRE(line->rfind(prefix, 0) == 0);
  REQUIRE(line->size() > prefix.size() + 3);
  CHECK(line->substr(line->size() - 3) == "/v1");
  auto port = port_of(*line);
  REQUIRE(port != 0);
  http_client client{port};
  std::vector<std::string> texts{"first text", "second text", "third text"};
  auto res = client.embed(embed_body(texts));
  REQUIRE(res.status == 200);
  openai::response_expectation expect;
  expect.inputs = 3;
  expect.dimensions = 16;
  auto decoded = openai::decode_response(res.body, expect);
  REQUIRE(decoded);
  for (std::size_t i = 0; i < texts.size(); ++i)
    CHECK(decoded->data[i] == hash_embed(texts[i], 16));
  // Exits cleanly with a keep-alive connection still open.
  child.signal(SIGTERM);
  CHECK(child.wait_exit(10s) == 0);
  CHECK_FALSE(child.read_line(1s)); // exactly one line on stdout
  CHECK(client.wait_for_close(2s));
}

TEST_CASE("embedrt mock exits 0 on SIGINT, also serving TLS") {
  std::string dir = EMBEDRT_TEST_DATA_DIR;
  child_process child{{"mock", "--listen=127.0.0.1:0", "--tls-cert",
                       dir + "/tls/server.pem", "--tls-key",
                       dir + "/tls/server.key", "--threads", "2"}};
  auto line = child.read_line(10s);
  REQUIRE(line);
  REQUIRE(line->rfind("listening on https://127.0.0.1:", 0) == 0);
  http_client client{port_of(*line),
                     tls_options{dir + "/tls/ca.pem", "127.0.0.1"}};
  CHECK(client.embed(embed_body({"secure"}, 8)).status == 200);
  child.signal(SIGINT);
  CHECK(child.wait_exit(10s) == 0);
}

TEST_CASE("embedrt rejects bad usage with exit code 2") {
  struct bad_case {
    std::vector<std::string> args;
    const char* mentions;
  };
  for (const auto& [args, mentions] : std::vector<bad_case>{
           {{}, "usage"},
           {{"frobnicate"}, "unknown command 'frobnicate'"},
           {{"mock", "--bogus"}, "unknown option '--bogus'"},
           {{"mock", "--threads", "0"}, "--threads"},
           {{"mock", "--listen", "nowhere"}, "nowhere"},
           {{"mock", "--fault", "500:0.6,hang:0.5"}, "sum"},
           {{"mock", "--fault", "explode:0.1"}, "explode"},
           {{"mock", "--latency", "lognormal:50"}, "lognormal"},
           {{"mock", "--latency-ms", "5", "--latency", "5"}, "exclusive"},
           {{"mock", "--tls-cert", "x.pem"}, "TLS"}}) {
    child_process child{args};
    auto code = child.wait_exit(10s);
    auto err = child.stderr_text();
    INFO("args: " << (args.empty() ? "" : args.back()) << " stderr: " << err);
    CHECK(code == 2);
    CHECK_THAT(err, Catch::Contains(mentions));
  }
}

TEST_CASE("embedrt --help and mock --help exit 0") {
  {
    child_process child{{"--help"}};
    auto line = child.read_line(10s);
    REQUIRE(line);
    CHECK_THAT(*line, Catch::StartsWith("usage: embedrt"));
    CHECK(child.wait_exit(10s) == 0);
  }
  {
    child_process child{{"mock", "--help"}};
    auto line = child.read_line(10s);
    REQUIRE(line);
    CHECK_THAT(*line, Catch::StartsWith("usage: embedrt mock"));
    CHECK(child.wait_exit(10s) == 0);
  }
}

TEST_CASE("embedrt mock reports a port in use with exit code 1") {
  child_process first{{"mock"}};
  auto line = first.read_line(10s);
  REQUIRE(line);
  auto port = port_of(*line);
  child_process second{
      {"mock", "--listen", "127.0.0.1:" + std::to_string(port)}};
  CHECK(second.wait_exit(10s) == 1);
  CHECK_THAT(second.stderr_text(), Catch::Contains("bind"));
  first.signal(SIGTERM);
  CHECK(first.wait_exit(10s) == 0);
}
