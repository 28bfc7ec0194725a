// What the load, memory and bad-input tests of `embedrt serve` read from the
// running processes: the memory figures of /proc/PID/status and values of
// the Prometheus text at /metrics.
#pragma once

#include "mock_test_client.hpp"

#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <sys/types.h>
#include <thread>

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

/// The sanitizers change memory figures beyond any useful bound (ASan's
/// quarantine and shadow memory): the RSS checks run in plain builds only.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool memory_figures_meaningful = false;
#else
constexpr bool memory_figures_meaningful = true;
#endif

} // namespace embedrt::test
