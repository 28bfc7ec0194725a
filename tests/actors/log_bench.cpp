// The caller's cost of log(): THREADS threads log LINES lines each to
// OUTPUT (a file such as /dev/null, or "pipe": a pipe drained by a reader
// thread), then the logger is drained. Prints ns per call on the caller
// (mean over the threads), the wall time until every line was written and,
// for a pipe, how many lines arrived. See docs/profile.md, "Logging".
//
//   log_bench THREADS LINES OUTPUT
//
// Built with -DLOG_BENCH_SYNC against an older log.cpp (no flush_log) it
// measures the synchronous logger for comparison.
#include "embedrt/log.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: log_bench THREADS LINES OUTPUT|pipe\n");
    return 2;
  }
  int threads = std::atoi(argv[1]);
  long lines = std::atol(argv[2]);
  std::string output = argv[3];
  std::FILE* out = nullptr;
  int fds[2] = {-1, -1};
  std::thread reader;
  std::atomic<long> newlines{0};
  if (output == "pipe") {
    if (pipe(fds) != 0 || (out = fdopen(fds[1], "w")) == nullptr)
      return 1;
    reader = std::thread{[&] {
      char chunk[65536];
      ssize_t n = 0;
      long count = 0;
      while ((n = read(fds[0], chunk, sizeof(chunk))) > 0)
        count += std::count(chunk, chunk + n, '\n');
      newlines = count;
    }};
  } else if ((out = std::fopen(output.c_str(), "w")) == nullptr) {
    return 1;
  }
  embedrt::set_log_sink(out);
  embedrt::set_log_level(embedrt::log_level::info);
  std::vector<double> ns_per_call(static_cast<std::size_t>(threads));
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> loggers;
  for (int t = 0; t < threads; ++t)
    loggers.emplace_back([t, lines, &ns_per_call] {
      auto begin = std::chrono::steady_clock::now();
      for (long i = 0; i < lines; ++i)
        embedrt::log(embedrt::log_level::warn, "attempt_failed",
                     {{"request_id", "req-" + std::to_string(i)},
                      {"upstream", "openai"},
                      {"thread", std::to_string(t)},
                      {"error", "connect_failed: connection refused"}});
      std::chrono::duration<double, std::nano> took
          = std::chrono::steady_clock::now() - begin;
      ns_per_call[static_cast<std::size_t>(t)] = took.count() / lines;
    });
  for (auto& l : loggers)
    l.join();
#ifndef LOG_BENCH_SYNC
  embedrt::flush_log(std::chrono::seconds{60});
#endif
  std::chrono::duration<double, std::milli> wall
      = std::chrono::steady_clock::now() - start;
  embedrt::set_log_sink(nullptr);
  std::fclose(out);
  if (reader.joinable())
    reader.join();
  double mean = 0;
  for (auto v : ns_per_call)
    mean += v / threads;
  std::printf("threads=%d lines=%ld output=%s ns_per_call=%.0f wall_ms=%.0f",
              threads, lines, output.c_str(), mean, wall.count());
  if (output == "pipe")
    std::printf(" lines_out=%ld", newlines.load());
  std::printf("\n");
  return 0;
}
