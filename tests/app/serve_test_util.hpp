// The real `embedrt serve` and `embedrt mock` binaries as child processes,
// and what the end-to-end tests of the gateway check their replies with
// (serve_e2e_test.cpp, serve_clients_test.cpp).
#pragma once

#include "embedrt/protocol/openai.hpp"
#include "mock_test_client.hpp"
#include "spawn_util.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace embedrt::test {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

/// The test's environment without anything that would configure embedrt
/// (OPENAI_*, EMBEDRT_*), plus `extra` ("NAME=VALUE").
inline std::vector<std::string> clean_env(std::vector<std::string> extra = {}) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv{*e};
    if (kv.rfind("OPENAI_", 0) == 0 || kv.rfind("EMBEDRT_", 0) == 0)
      continue;
    out.push_back(std::move(kv));
  }
  for (auto& kv : extra)
    out.push_back(std::move(kv));
  return out;
}

/// A running `embedrt` subcommand; killed at scope exit if still running.
class process {
 public:
  explicit process(std::vector<std::string> args,
                   std::vector<std::string> env = clean_env())
      : process(EMBEDRT_CLI_PATH, std::move(args), std::move(env)) {
    // nop
  }

  /// Any program (`program` is its path), not `embedrt`.
  process(std::string program, std::vector<std::string> args,
          std::vector<std::string> env) {
    args.insert(args.begin(), std::move(program));
    env_ = std::move(env);
    std::vector<char*> envp;
    for (auto& kv : env_)
      envp.push_back(kv.data());
    envp.push_back(nullptr);
    auto child = spawn_with_pipes(std::move(args), envp.data());
    REQUIRE(child.rc == 0);
    pid_ = child.pid;
    out_ = child.out;
    err_ = child.err;
  }

  // A copy would kill the child (and close its pipes) when it goes away.
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  ~process() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    close(out_);
    close(err_);
  }

  /// One line of stdout; std::nullopt on EOF or timeout.
  std::optional<std::string> read_line(milliseconds timeout) {
    auto deadline = steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        auto line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<milliseconds>(
          deadline - steady_clock::now());
      if (left.count() <= 0)
        return std::nullopt;
      pollfd pfd{out_, POLLIN, 0};
      if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
        continue;
      char chunk[512];
      auto n = read(out_, chunk, sizeof(chunk));
      if (n <= 0)
        return std::nullopt;
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  /// The port of the "listening on http://127.0.0.1:PORT[/v1]" line.
  uint16_t wait_listening() {
    auto line = read_line(std::chrono::seconds{20});
    REQUIRE(line);
    const std::string prefix = "listening on http://127.0.0.1:";
    INFO("stdout line: " << *line);
    REQUIRE(line->rfind(prefix, 0) == 0);
    auto rest = line->substr(prefix.size());
    auto port = std::stoi(rest.substr(0, rest.find('/')));
    REQUIRE(port > 0);
    return static_cast<uint16_t>(port);
  }

  void signal(int sig) {
    kill(pid_, sig);
  }

  pid_t pid() const noexcept {
    return pid_;
  }

  /// The exit code, or -1 if it did not exit in time (then killed) or died
  /// from a signal.
  int wait_exit(milliseconds timeout) {
    auto deadline = steady_clock::now() + timeout;
    int status = 0;
    for (;;) {
      auto r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_)
        break;
      if (steady_clock::now() >= deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        exited_ = true;
        return -1;
      }
      std::this_thread::sleep_for(milliseconds{5});
    }
    exited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  /// Everything written to stderr (after the exit).
  std::string stderr_text() {
    std::string text;
    char chunk[512];
    ssize_t n = 0;
    while ((n = read(err_, chunk, sizeof(chunk))) > 0)
      text.append(chunk, static_cast<std::size_t>(n));
    return text;
  }

 private:
  std::vector<std::string> env_;
  pid_t pid_ = -1;
  int out_ = -1;
  int err_ = -1;
  std::string buf_;
  bool exited_ = false;
};

/// `embedrt mock` with extra options; its base URL.
struct mock_proc {
  explicit mock_proc(std::vector<std::string> extra = {})
      : proc([&] {
          std::vector<std::string> args{"mock", "--listen", "127.0.0.1:0"};
          args.insert(args.end(), extra.begin(), extra.end());
          return process{args};
        }()) {
    port = proc.wait_listening();
    url = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  }
  process proc;
  uint16_t port = 0;
  std::string url;
};

/// `embedrt serve` with the given options; its port.
struct serve_proc {
  explicit serve_proc(std::vector<std::string> extra,
                      std::vector<std::string> env = clean_env())
      : proc([&] {
          std::vector<std::string> args{"serve", "--listen", "127.0.0.1:0",
                                        "--log-level", "warn"};
          args.insert(args.end(), extra.begin(), extra.end());
          return process{args, env};
        }()) {
    port = proc.wait_listening();
  }
  process proc;
  uint16_t port = 0;
};

/// An upstream on 127.0.0.1 that refuses every connection: a port bound by
/// a socket that never listens, held for the object's lifetime (so no other
/// process can take the port meanwhile).
struct refusing_upstream {
  int fd = -1;
  std::string url;
  refusing_upstream() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/v1";
  }
  ~refusing_upstream() {
    close(fd);
  }
  refusing_upstream(const refusing_upstream&) = delete;
  refusing_upstream& operator=(const refusing_upstream&) = delete;
};

/// A config file with `text`, removed at scope exit.
struct temp_config {
  std::string path;
  explicit temp_config(const std::string& text) {
    char tmpl[] = "/tmp/embedrt-serve-config-XXXXXX";
    int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    path = tmpl;
    REQUIRE(write(fd, text.data(), text.size())
            == static_cast<ssize_t>(text.size()));
    close(fd);
  }
  ~temp_config() {
    std::remove(path.c_str());
  }
};

/// The `error` object of an OpenAI error body.
inline openai::api_error error_of(const http_response& res) {
  auto e = openai::decode_error(res.body);
  INFO("body: " << res.body);
  REQUIRE(e);
  return *e;
}

inline std::vector<std::vector<float>> vectors_of(const http_response& res,
                                                  std::size_t inputs, int dims,
                                                  bool base64 = false) {
  INFO("status " << res.status << " body: " << res.body.substr(0, 300));
  REQUIRE(res.status == 200);
  openai::response_expectation expect;
  expect.inputs = inputs;
  expect.dimensions = dims;
  expect.encoding_format
      = base64 ? openai::encoding::base64 : openai::encoding::float32;
  auto decoded = openai::decode_response(res.body, expect);
  REQUIRE(decoded);
  return decoded->data;
}

/// Polls `/readyz` until it answers `status` (at most `timeout`).
inline bool readyz_becomes(http_client& client, int status,
                           milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (client.request("GET", "/readyz").status == status)
      return true;
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(milliseconds{50});
  }
}

/// Polls /readyz until it lists the upstream `name` (a reload took effect);
/// false if it does not within `timeout`.
inline bool readyz_lists(http_client& client, const std::string& name,
                         milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto needle = "\"name\":\"" + name + "\"";
  for (;;) {
    if (client.request("GET", "/readyz").body.find(needle) != std::string::npos)
      return true;
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(milliseconds{20});
  }
}

/// Sends the same request on `n` connections at once (each its own client
/// and thread); returns the responses.
inline std::vector<http_response>
concurrently(uint16_t port, std::size_t n, const std::string& body,
             const header_list& headers = {},
             milliseconds timeout = milliseconds{10000}) {
  std::vector<std::future<http_response>> futs;
  for (std::size_t i = 0; i < n; ++i)
    futs.push_back(std::async(std::launch::async, [=] {
      http_client c{port};
      return c.embed(body, headers, timeout);
    }));
  std::vector<http_response> out;
  for (auto& f : futs)
    out.push_back(f.get());
  return out;
}

} // namespace embedrt::test
