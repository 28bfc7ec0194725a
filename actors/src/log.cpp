#include "embedrt/log.hpp"

#include <atomic>
#include <chrono>
#include <ctime>

namespace embedrt {

namespace {

std::atomic<int> current_level{static_cast<int>(log_level::info)};
std::atomic<std::FILE*> sink{nullptr};

const char* level_name(log_level lvl) {
  switch (lvl) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
    default: return "off";
  }
}

bool needs_quotes(std::string_view v) {
  if (v.empty())
    return true;
  for (char c : v)
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
      return true;
  return false;
}

void append_value(std::string& out, std::string_view v) {
  if (!needs_quotes(v)) {
    out.append(v);
    return;
  }
  out += '"';
  for (char c : v) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
          out += '?';
        else
          out += c;
    }
  }
  out += '"';
}

void append_timestamp(std::string& out) {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto secs = system_clock::to_time_t(now);
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  out += buf;
}

} // namespace

void set_log_level(log_level lvl) {
  current_level.store(static_cast<int>(lvl), std::memory_order_relaxed);
}

log_level get_log_level() {
  return static_cast<log_level>(current_level.load(std::memory_order_relaxed));
}

bool parse_log_level(std::string_view text, log_level& out) {
  for (auto lvl : {log_level::debug, log_level::info, log_level::warn,
                   log_level::error, log_level::off})
    if (text == level_name(lvl)) {
      out = lvl;
      return true;
    }
  return false;
}

void set_log_sink(std::FILE* out) {
  sink.store(out, std::memory_order_relaxed);
}

void log(log_level lvl, std::string_view event,
         std::initializer_list<log_field> fields) {
  if (!log_enabled(lvl))
    return;
  std::string line;
  line.reserve(128);
  line += "ts=";
  append_timestamp(line);
  line += " level=";
  line += level_name(lvl);
  line += " event=";
  append_value(line, event);
  for (auto& [key, value] : fields) {
    line += ' ';
    line.append(key);
    line += '=';
    append_value(line, value);
  }
  line += '\n';
  auto* out = sink.load(std::memory_order_relaxed);
  if (out == nullptr)
    out = stderr;
  std::fwrite(line.data(), 1, line.size(), out);
  std::fflush(out);
}

} // namespace embedrt
