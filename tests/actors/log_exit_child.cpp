// A child process for log_test.cpp: logs lines to stderr, then ends in the
// way the first argument names, so the parent can count what arrived.
//
//   log_exit_child MODE LINES THREADS
//
// MODE: return (return 0 from main), exit (std::exit(3) from main),
// exit_thread (another thread calls std::exit(4) while main waits),
// late (return 0; a static object logs one more line from its destructor,
// after the logger shut down), silent (log nothing, return 0).
//
// After logging it writes "logged" to stdout; the parent reads stderr only
// from then on, so the lines are still queued (the writer blocked on a full
// pipe) when the process starts to end.
#include "embedrt/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

/// Constructed before the logger starts, so destroyed after its exit
/// handler ran: its line is written by the caller.
struct late_logger {
  bool armed = false;
  ~late_logger() {
    if (armed)
      embedrt::log(embedrt::log_level::info, "late");
  }
} late;

/// Tells the parent that every line was logged.
void announce_logged() {
  std::fputs("logged\n", stdout);
  std::fflush(stdout);
}

void log_lines(int thread, int count) {
  for (int i = 0; i < count; ++i)
    embedrt::log(
        embedrt::log_level::info, "child_line",
        {{"thread", std::to_string(thread)}, {"seq", std::to_string(i)}});
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 4)
    return 2;
  std::string mode = argv[1];
  int lines = std::atoi(argv[2]);
  int threads = std::atoi(argv[3]);
  if (mode == "silent")
    return 0;
  late.armed = mode == "late";
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back(log_lines, t, lines);
  if (mode == "exit_thread") {
    // std::exit from another thread ends the process while main waits.
    std::thread finisher{[&workers] {
      for (auto& w : workers)
        w.join();
      announce_logged();
      std::exit(4);
    }};
    finisher.join();
    return 1; // not reached
  }
  for (auto& w : workers)
    w.join();
  announce_logged();
  if (mode == "exit")
    std::exit(3);
  return 0;
}
