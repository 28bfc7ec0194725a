// Runs tests/tools/check_prometheus.py (the official Python client's
// parser) on an exposition text; shared by the protocol and actor tests.
// Needs EMBEDRT_TEST_TOOLS_DIR (set by CMake).
#pragma once

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>

namespace embedrt::test {

/// Runs tests/tools/check_prometheus.py on `text`; returns its exit code and
/// stdout.
inline std::pair<int, std::string> run_checker(const std::string& text) {
  char path[] = "/tmp/embedrt-metrics-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size())
          == static_cast<ssize_t>(text.size()));
  close(fd);
  std::string cmd = std::string{"/usr/bin/python3 "} + EMBEDRT_TEST_TOOLS_DIR
      + "/check_prometheus.py " + path + " 2>&1";
  std::string out;
  auto* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
    out.append(buf, n);
  int status = pclose(p);
  unlink(path);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

} // namespace embedrt::test
