#include "embedrt/proc_stats.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <sched.h>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>

namespace embedrt {

std::size_t thread_count() noexcept {
  std::size_t n = 0;
  if (auto* dir = opendir("/proc/self/task")) {
    while (auto* e = readdir(dir))
      if (e->d_name[0] != '.')
        ++n;
    closedir(dir);
  }
  return n;
}

usage_sample sample_usage() noexcept {
  usage_sample s;
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return s;
  auto secs = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec)
        + static_cast<double>(tv.tv_usec) / 1e6;
  };
  s.cpu_s = secs(ru.ru_utime) + secs(ru.ru_stime);
  // Linux reports ru_maxrss in KiB.
  s.max_rss_mb = static_cast<double>(ru.ru_maxrss) / 1024.0;
  return s;
}

int64_t resident_bytes() noexcept {
  // /proc/self/statm: size resident shared text lib data dt (in pages).
  long long size = 0;
  long long resident = 0;
  auto* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr)
    return 0;
  auto n = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  if (n != 2)
    return 0;
  return static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE);
}

double process_start_time() noexcept {
  // Field 22 of /proc/self/stat is the start time in clock ticks after boot;
  // "btime" in /proc/stat is the boot time in seconds since the epoch.
  char buf[1024];
  auto* f = std::fopen("/proc/self/stat", "r");
  if (f == nullptr)
    return 0;
  auto len = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[len] = '\0';
  // The command name (field 2) may contain spaces: start after its ')'.
  auto* p = std::strrchr(buf, ')');
  if (p == nullptr)
    return 0;
  unsigned long long start_ticks = 0;
  // After ')': field 3 (state) is the first; field 22 is the 20th.
  int field = 2;
  char* save = nullptr;
  for (char* tok = strtok_r(p + 1, " ", &save); tok != nullptr;
       tok = strtok_r(nullptr, " ", &save)) {
    if (++field == 22) {
      start_ticks = std::strtoull(tok, nullptr, 10);
      break;
    }
  }
  unsigned long long btime = 0;
  if (auto* st = std::fopen("/proc/stat", "r")) {
    char line[256];
    while (std::fgets(line, sizeof(line), st) != nullptr)
      if (std::sscanf(line, "btime %llu", &btime) == 1)
        break;
    std::fclose(st);
  }
  auto ticks = sysconf(_SC_CLK_TCK);
  if (btime == 0 || ticks <= 0)
    return 0;
  return static_cast<double>(btime)
      + static_cast<double>(start_ticks) / static_cast<double>(ticks);
}

std::size_t usable_cores() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    auto n = CPU_COUNT(&set);
    if (n > 0)
      return static_cast<std::size_t>(n);
  }
  auto hw = std::thread::hardware_concurrency();
  return hw > 0 ? hw : 1;
}

} // namespace embedrt
