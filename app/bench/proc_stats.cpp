#include "bench/proc_stats.hpp"

#include <dirent.h>
#include <sched.h>
#include <sys/resource.h>
#include <thread>

namespace embedrt::bench {

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

} // namespace embedrt::bench
