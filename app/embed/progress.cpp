#include "embed/progress.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace embedrt::app::embed {

std::string group_digits(uint64_t n) {
  auto digits = std::to_string(n);
  std::string out;
  out.reserve(digits.size() + digits.size() / 3);
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return out;
}

std::string format_duration(double seconds) {
  auto s = static_cast<uint64_t>(std::max(0.0, std::round(seconds)));
  char buf[48];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%llu:%02llu:%02llu",
                  static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s / 60 % 60),
                  static_cast<unsigned long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%llu:%02llu",
                  static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  return buf;
}

std::string render_progress(const job_counts& c, double elapsed_s) {
  std::string out;
  bool sized = c.bytes_total > 0;
  double frac = 0.0;
  if (sized) {
    frac = std::min(1.0,
                    static_cast<double>(c.bytes_read)
                        / static_cast<double>(c.bytes_total));
    constexpr int width = 20;
    auto filled = static_cast<int>(frac * width);
    out += '[';
    out.append(static_cast<std::size_t>(filled), '#');
    out.append(static_cast<std::size_t>(width - filled), '-');
    out += "] ";
    char pct[8];
    std::snprintf(pct, sizeof(pct), "%3d%%", static_cast<int>(frac * 100));
    out += pct;
    out += "  ";
  }
  out += group_digits(c.written) + " written  ";
  if (elapsed_s > 0.0) {
    auto rate
        = static_cast<uint64_t>(static_cast<double>(c.written) / elapsed_s);
    out += group_digits(rate) + "/s";
  } else {
    out += "-/s";
  }
  if (sized) {
    out += "  ETA ";
    // Bytes consumed so far against time so far: the input's own pace.
    if (c.bytes_read > 0 && elapsed_s > 0.0 && frac < 1.0) {
      auto per_byte = elapsed_s / static_cast<double>(c.bytes_read);
      out += format_duration(
          per_byte * static_cast<double>(c.bytes_total - c.bytes_read));
    } else if (frac >= 1.0) {
      out += "0:00";
    } else {
      out += "-:--";
    }
  }
  out += "  " + group_digits(c.skipped) + " skipped  " + group_digits(c.failed)
      + " failed";
  return out;
}

} // namespace embedrt::app::embed
