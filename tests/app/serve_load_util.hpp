// What the load, memory and bad-input tests of `embedrt serve` read from the
// running processes — the memory figures of /proc/PID/status, values of the
// Prometheus text at /metrics — and a raw TCP connection for what the HTTP
// client cannot send (odd framings, pipelining, HTTP/1.0).
#pragma once

#include "mock_test_client.hpp"

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/types.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace embedrt::test {

/// A field of /proc/PID/status in KiB ("VmRSS", "VmHWM"); -1 if absent.
inline int64_t proc_status_kib(pid_t pid, const std::string& field) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0)
      return std::stoll(line.substr(field.size() + 1));
  return -1;
}

inline int64_t mib(int64_t kib) {
  return kib / 1024;
}

/// The value of the unlabelled sample `name` in Prometheus text.
inline std::optional<double> metric_value(const std::string& text,
                                          const std::string& name) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto eol = text.find('\n', pos);
    if (eol == std::string::npos)
      eol = text.size();
    auto line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.rfind(name + " ", 0) == 0)
      return std::stod(line.substr(name.size() + 1));
  }
  return std::nullopt;
}

/// Polls /metrics until `name` reads `value` (at most `timeout`); the last
/// value read.
inline std::optional<double> wait_metric(uint16_t port, const std::string& name,
                                         double value,
                                         std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  http_client probe{port};
  std::optional<double> last;
  for (;;) {
    auto res = probe.request("GET", "/metrics");
    if (res.status == 200)
      last = metric_value(res.body, name);
    if ((last && *last == value)
        || std::chrono::steady_clock::now() >= deadline)
      return last;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
}

/// A plain TCP connection to 127.0.0.1:port, closed at scope exit.
class tcp_conn {
 public:
  explicit tcp_conn(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    REQUIRE(connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
            == 0);
  }
  ~tcp_conn() {
    if (fd_ >= 0)
      close(fd_);
  }
  tcp_conn(tcp_conn&& other) noexcept : fd_(other.fd_) {
    other.fd_ = -1;
  }
  tcp_conn(const tcp_conn&) = delete;
  tcp_conn& operator=(const tcp_conn&) = delete;

  void send_text(const std::string& text) {
    REQUIRE(::send(fd_, text.data(), text.size(), MSG_NOSIGNAL)
            == static_cast<ssize_t>(text.size()));
  }

  /// True if something (or the close) can be read within `timeout`.
  bool readable(std::chrono::milliseconds timeout) {
    pollfd pfd{fd_, POLLIN, 0};
    return poll(&pfd, 1, static_cast<int>(timeout.count())) > 0;
  }

  /// Everything until the server closes the connection; fails the test if
  /// it does not within `timeout`.
  std::string read_until_close(std::chrono::milliseconds timeout) {
    bool closed = false;
    auto out = read_all(timeout, closed);
    if (!closed)
      FAIL("the server did not close the connection; received: " << out);
    return out;
  }

  /// True if the server closed the connection (EOF or reset) within
  /// `timeout`, having sent nothing.
  bool closed_silently(std::chrono::milliseconds timeout) {
    if (!readable(timeout))
      return false;
    char c = 0;
    return recv(fd_, &c, 1, MSG_DONTWAIT) <= 0;
  }

  /// Everything until the server closes the connection, or what came
  /// within `timeout` (then `closed` is false).
  std::string read_all(std::chrono::milliseconds timeout, bool& closed) {
    std::string out;
    closed = false;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    char chunk[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      if (!readable(std::chrono::milliseconds{50}))
        continue;
      auto n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) {
        closed = true;
        break;
      }
      out.append(chunk, static_cast<std::size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
};

/// The statuses of the responses in `bytes`, in order.
inline std::vector<int> statuses(const std::string& bytes) {
  std::vector<int> out;
  for (auto pos = bytes.find("HTTP/1.1 "); pos != std::string::npos;
       pos = bytes.find("HTTP/1.1 ", pos + 1))
    out.push_back(std::stoi(bytes.substr(pos + 9, 3)));
  return out;
}

/// The sanitizers change memory figures beyond any useful bound (ASan's
/// quarantine and shadow memory): the RSS checks run in plain builds only.
/// They also slow the test's own client threads: an instrumented client
/// cannot offer 10 x capacity, only some multiple of it, and an instrumented
/// server writes a reply later after its call completed.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool memory_figures_meaningful = false;
constexpr double least_overload_factor = 2.0;
constexpr std::chrono::milliseconds scheduling_slack{1500};
#else
constexpr bool memory_figures_meaningful = true;
constexpr double least_overload_factor = 5.0;
constexpr std::chrono::milliseconds scheduling_slack{500};
#endif

} // namespace embedrt::test
