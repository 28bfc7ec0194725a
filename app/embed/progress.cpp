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

std::string render_progress(const job_counts& c, double elapsed_s,
                            std::size_t width) {
  // The pieces, most important last to go: the counts, the percentage, the
  // rate, the ETA, the bar.
  std::string bar;
  std::string pct;
  std::string eta;
  bool sized = c.bytes_total > 0;
  double frac = 0.0;
  if (sized) {
    frac = std::min(1.0,
                    static_cast<double>(c.bytes_read)
                        / static_cast<double>(c.bytes_total));
    constexpr int bar_width = 20;
    auto filled = static_cast<int>(frac * bar_width);
    bar += '[';
    bar.append(static_cast<std::size_t>(filled), '#');
    bar.append(static_cast<std::size_t>(bar_width - filled), '-');
    bar += "] ";
    char buf[8];
    std::snprintf(buf, sizeof(buf), "%3d%%", static_cast<int>(frac * 100));
    pct = buf;
    pct += "  ";
    eta = "  ETA ";
    // Bytes consumed so far against time so far: the input's own pace.
    if (c.bytes_read > 0 && elapsed_s > 0.0 && frac < 1.0) {
      auto per_byte = elapsed_s / static_cast<double>(c.bytes_read);
      eta += format_duration(
          per_byte * static_cast<double>(c.bytes_total - c.bytes_read));
    } else if (frac >= 1.0) {
      eta += "0:00";
    } else {
      eta += "-:--";
    }
  }
  std::string written = group_digits(c.written) + " written  ";
  std::string rate;
  if (elapsed_s > 0.0) {
    auto r = static_cast<uint64_t>(static_cast<double>(c.written) / elapsed_s);
    rate = group_digits(r) + "/s";
  } else {
    rate = "-/s";
  }
  std::string tail = "  " + group_digits(c.skipped) + " skipped  "
      + group_digits(c.failed) + " failed";
  auto line = [&] {
    return bar + pct + written + rate + eta + tail;
  };
  if (width == 0)
    return line();
  // Drop pieces until the line fits; the failed count stays to the last.
  for (auto* piece : {&bar, &eta, &rate}) {
    if (line().size() <= width)
      break;
    piece->clear();
  }
  auto out = line();
  if (out.size() > width) {
    // Still too long (a very narrow terminal): the counts alone, short.
    out = group_digits(c.written) + " ok " + group_digits(c.skipped) + " skip "
        + group_digits(c.failed) + " failed";
    if (out.size() > width)
      out.resize(width);
  }
  return out;
}

} // namespace embedrt::app::embed
