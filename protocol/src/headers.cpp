#include "embedrt/protocol/headers.hpp"

#include "embedrt/protocol/errc.hpp"

#include <array>
#include <charconv>
#include <limits>

namespace embedrt {

namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using std::chrono::system_clock;

constexpr int64_t int64_max = std::numeric_limits<int64_t>::max();

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Renders a header value for an error message: at most 64 bytes, control
// characters replaced, so a hostile header cannot forge log lines.
std::string printable(std::string_view value) {
  constexpr std::size_t max_len = 64;
  std::string out;
  auto n = std::min(value.size(), max_len);
  out.reserve(n + 3);
  for (std::size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(value[i]);
    out.push_back(c < 0x20 || c == 0x7F ? '?' : static_cast<char>(c));
  }
  if (value.size() > max_len)
    out += "...";
  return out;
}

caf::error invalid(std::string_view what, std::string_view value) {
  std::string detail = "invalid ";
  detail += what;
  detail += " '";
  detail += printable(value);
  detail += '\'';
  return make_error(errc::invalid_response, std::move(detail));
}

// A non-negative decimal number "123", "1.5", ".5" or "5." split into an
// integer part and up to 18 fractional digits (further digits truncate).
struct decimal {
  int64_t whole = 0;
  int64_t frac = 0;       // fractional digits as an integer ...
  int64_t frac_scale = 1; // ... over this power of ten
};

// Parses a decimal number at the start of `s`; advances `s` past it. Returns
// false if there is no digit or the integer part overflows.
bool parse_decimal(std::string_view& s, decimal& out) {
  std::size_t i = 0;
  bool any = false;
  out = decimal{};
  for (; i < s.size() && is_digit(s[i]); ++i) {
    any = true;
    int64_t d = s[i] - '0';
    if (out.whole > (int64_max - d) / 10)
      return false;
    out.whole = out.whole * 10 + d;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    for (; i < s.size() && is_digit(s[i]); ++i) {
      any = true;
      if (out.frac_scale < 1'000'000'000'000'000'000) {
        out.frac = out.frac * 10 + (s[i] - '0');
        out.frac_scale *= 10;
      }
    }
  }
  if (!any)
    return false;
  s.remove_prefix(i);
  return true;
}

// value * unit, rounded up (a retry hint is never shortened), or false on
// overflow. `unit` is in the target resolution (e.g. 1000 for seconds ->
// milliseconds).
bool scale_up(const decimal& d, int64_t unit, int64_t& out) {
  if (d.whole > int64_max / unit)
    return false;
  int64_t result = d.whole * unit;
  // frac / frac_scale * unit, rounded up, without overflowing: frac_scale
  // and unit are both <= 10^18, so split the product.
  __int128 frac = static_cast<__int128>(d.frac) * unit;
  __int128 part = (frac + d.frac_scale - 1) / d.frac_scale;
  if (part > int64_max - result)
    return false;
  out = result + static_cast<int64_t>(part);
  return true;
}

// -- calendar -----------------------------------------------------------------

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
// days_from_civil): the inverse of gmtime without locale or time zone.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool is_leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

unsigned days_in_month(int64_t y, unsigned m) {
  constexpr std::array<unsigned, 12> days
      = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

constexpr std::array<std::string_view, 12> month_names
    = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

constexpr std::array<std::string_view, 7> short_days
    = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};

constexpr std::array<std::string_view, 7> long_days
    = {"Monday", "Tuesday",  "Wednesday", "Thursday",
       "Friday", "Saturday", "Sunday"};

// A tiny cursor over the date text; every step fails closed.
struct cursor {
  std::string_view s;

  bool literal(std::string_view lit) {
    if (s.substr(0, lit.size()) != lit)
      return false;
    s.remove_prefix(lit.size());
    return true;
  }

  // Exactly `n` digits.
  bool digits(std::size_t n, unsigned& out) {
    if (s.size() < n)
      return false;
    unsigned v = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (!is_digit(s[i]))
        return false;
      v = v * 10 + static_cast<unsigned>(s[i] - '0');
    }
    out = v;
    s.remove_prefix(n);
    return true;
  }

  template <std::size_t N>
  bool name(const std::array<std::string_view, N>& names, unsigned& index) {
    for (std::size_t i = 0; i < N; ++i) {
      if (literal(names[i])) {
        index = static_cast<unsigned>(i);
        return true;
      }
    }
    return false;
  }

  bool month(unsigned& m) {
    if (!name(month_names, m))
      return false;
    m += 1;
    return true;
  }

  // "HH:MM:SS"
  bool time_of_day(unsigned& h, unsigned& mi, unsigned& sec) {
    return digits(2, h) && literal(":") && digits(2, mi) && literal(":")
        && digits(2, sec);
  }
};

struct civil_time {
  int64_t year = 0;
  unsigned month = 0, day = 0, hour = 0, minute = 0, second = 0;
};

bool valid(const civil_time& t) {
  // Seconds up to 60 allow a leap second (RFC 7231, section 7.1.1.1).
  return t.year >= 1 && t.year <= 9999 && t.month >= 1 && t.month <= 12
      && t.day >= 1 && t.day <= days_in_month(t.year, t.month) && t.hour <= 23
      && t.minute <= 59 && t.second <= 60;
}

// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
bool parse_imf_fixdate(std::string_view text, civil_time& t) {
  cursor c{text};
  unsigned wd = 0, year = 0;
  if (!(c.name(short_days, wd) && c.literal(", ") && c.digits(2, t.day)
        && c.literal(" ") && c.month(t.month) && c.literal(" ")
        && c.digits(4, year) && c.literal(" ")
        && c.time_of_day(t.hour, t.minute, t.second) && c.literal(" GMT")
        && c.s.empty()))
    return false;
  t.year = year;
  return true;
}

// RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
bool parse_rfc850(std::string_view text, civil_time& t) {
  cursor c{text};
  unsigned wd = 0, yy = 0;
  if (!(c.name(long_days, wd) && c.literal(", ") && c.digits(2, t.day)
        && c.literal("-") && c.month(t.month) && c.literal("-")
        && c.digits(2, yy) && c.literal(" ")
        && c.time_of_day(t.hour, t.minute, t.second) && c.literal(" GMT")
        && c.s.empty()))
    return false;
  // RFC 7231: a two-digit year that appears to be more than 50 years in the
  // future is the most recent past year with the same last two digits.
  auto now_days = std::chrono::duration_cast<seconds>(
                      system_clock::now().time_since_epoch())
                      .count()
      / 86400;
  // Current year from days since the epoch (accurate to within a day).
  int64_t current = 1970 + (now_days * 400) / 146097;
  int64_t century = current - current % 100;
  t.year = century + yy;
  if (t.year > current + 50)
    t.year -= 100;
  return true;
}

// asctime: "Sun Nov  6 08:49:37 1994" (day padded with a space).
bool parse_asctime(std::string_view text, civil_time& t) {
  cursor c{text};
  unsigned wd = 0, year = 0;
  if (!(c.name(short_days, wd) && c.literal(" ") && c.month(t.month)
        && c.literal(" ")))
    return false;
  if (c.literal(" ")) {
    if (!c.digits(1, t.day))
      return false;
  } else if (!c.digits(2, t.day)) {
    return false;
  }
  if (!(c.literal(" ") && c.time_of_day(t.hour, t.minute, t.second)
        && c.literal(" ") && c.digits(4, year) && c.s.empty()))
    return false;
  t.year = year;
  return true;
}

} // namespace

caf::expected<nanoseconds> parse_duration(std::string_view text) {
  auto s = trim(text);
  if (s.empty())
    return invalid("duration", text);
  // A bare number is seconds.
  {
    auto rest = s;
    decimal d;
    if (parse_decimal(rest, d) && rest.empty()) {
      int64_t ns = 0;
      if (!scale_up(d, 1'000'000'000, ns))
        return invalid("duration", text);
      return nanoseconds{ns};
    }
  }
  int64_t total = 0;
  while (!s.empty()) {
    decimal d;
    if (!parse_decimal(s, d))
      return invalid("duration", text);
    int64_t unit = 0;
    if (s.substr(0, 2) == "ns") {
      unit = 1;
      s.remove_prefix(2);
    } else if (s.substr(0, 2) == "us") {
      unit = 1'000;
      s.remove_prefix(2);
    } else if (s.substr(0, 3) == "\xC2\xB5s" || s.substr(0, 3) == "\xCE\xBCs") {
      // U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU, as Go accepts.
      unit = 1'000;
      s.remove_prefix(3);
    } else if (s.substr(0, 2) == "ms") {
      unit = 1'000'000;
      s.remove_prefix(2);
    } else if (s.substr(0, 1) == "s") {
      unit = 1'000'000'000;
      s.remove_prefix(1);
    } else if (s.substr(0, 1) == "m") {
      unit = 60'000'000'000;
      s.remove_prefix(1);
    } else if (s.substr(0, 1) == "h") {
      unit = 3'600'000'000'000;
      s.remove_prefix(1);
    } else {
      return invalid("duration", text);
    }
    int64_t part = 0;
    if (!scale_up(d, unit, part) || part > int64_max - total)
      return invalid("duration", text);
    total += part;
  }
  return nanoseconds{total};
}

caf::expected<system_clock::time_point> parse_http_date(std::string_view text) {
  auto s = trim(text);
  civil_time t;
  bool ok = parse_imf_fixdate(s, t);
  if (!ok) {
    t = civil_time{};
    ok = parse_rfc850(s, t);
  }
  if (!ok) {
    t = civil_time{};
    ok = parse_asctime(s, t);
  }
  if (!ok || !valid(t))
    return invalid("HTTP-date", text);
  int64_t secs = days_from_civil(t.year, t.month, t.day) * 86400
      + int64_t{t.hour} * 3600 + int64_t{t.minute} * 60 + int64_t{t.second};
  // system_clock counts nanoseconds in 64 bits: years 1678 to 2261 fit.
  constexpr auto max_secs
      = std::chrono::duration_cast<seconds>(system_clock::duration::max())
            .count();
  if (secs >= max_secs || secs <= -max_secs)
    return invalid("HTTP-date (out of range)", text);
  return system_clock::time_point{
      std::chrono::duration_cast<system_clock::duration>(seconds{secs})};
}

caf::expected<milliseconds> parse_retry_after(std::string_view text,
                                              system_clock::time_point now) {
  auto s = trim(text);
  if (!s.empty() && (is_digit(s.front()) || s.front() == '.')) {
    auto rest = s;
    decimal d;
    int64_t ms = 0;
    if (!parse_decimal(rest, d) || !rest.empty() || !scale_up(d, 1000, ms))
      return invalid("retry-after", text);
    return milliseconds{ms};
  }
  auto date = parse_http_date(s);
  if (!date)
    return invalid("retry-after", text);
  if (*date <= now)
    return milliseconds{0};
  auto delta = *date - now;
  auto ms = std::chrono::duration_cast<milliseconds>(delta);
  if (ms < delta)
    ++ms;
  return ms;
}

caf::expected<milliseconds> parse_retry_after_ms(std::string_view text) {
  auto s = trim(text);
  auto rest = s;
  decimal d;
  int64_t ms = 0;
  if (!parse_decimal(rest, d) || !rest.empty() || !scale_up(d, 1, ms))
    return invalid("retry-after-ms", text);
  return milliseconds{ms};
}

caf::expected<bool> parse_should_retry(std::string_view text) {
  auto s = trim(text);
  auto iequals = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size())
      return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      char c = a[i];
      if (c >= 'A' && c <= 'Z')
        c = static_cast<char>(c - 'A' + 'a');
      if (c != b[i])
        return false;
    }
    return true;
  };
  if (iequals(s, "true"))
    return true;
  if (iequals(s, "false"))
    return false;
  return invalid("x-should-retry", text);
}

namespace {

// A non-negative decimal integer, as in x-ratelimit-limit-*.
std::optional<int64_t> parse_count(std::string_view text) {
  auto s = trim(text);
  int64_t value = 0;
  if (s.empty() || !is_digit(s.front()))
    return std::nullopt;
  auto res = std::from_chars(s.data(), s.data() + s.size(), value);
  if (res.ec != std::errc{} || res.ptr != s.data() + s.size())
    return std::nullopt;
  return value;
}

void note_malformed(response_hints& hints, std::string_view name,
                    std::string_view value) {
  if (!hints.malformed.empty())
    hints.malformed += "; ";
  hints.malformed += name;
  hints.malformed += "='";
  hints.malformed += printable(value);
  hints.malformed += '\'';
}

} // namespace

response_hints parse_response_hints(const header_lookup& lookup,
                                    system_clock::time_point now) {
  response_hints hints;
  // Retry delay: retry-after-ms is more precise and wins when valid.
  if (auto v = lookup("retry-after-ms")) {
    if (auto ms = parse_retry_after_ms(*v))
      hints.retry_after = *ms;
    else
      note_malformed(hints, "retry-after-ms", *v);
  }
  if (auto v = lookup("retry-after")) {
    if (auto ms = parse_retry_after(*v, now)) {
      if (!hints.retry_after)
        hints.retry_after = *ms;
    } else {
      note_malformed(hints, "retry-after", *v);
    }
  }
  if (auto v = lookup("x-should-retry")) {
    if (auto b = parse_should_retry(*v))
      hints.should_retry = *b;
    else
      note_malformed(hints, "x-should-retry", *v);
  }
  auto count = [&](const char* name, std::optional<int64_t>& field) {
    if (auto v = lookup(name)) {
      if (auto n = parse_count(*v))
        field = *n;
      else
        note_malformed(hints, name, *v);
    }
  };
  auto& rl = hints.rate_limit;
  count("x-ratelimit-limit-requests", rl.limit_requests);
  count("x-ratelimit-limit-tokens", rl.limit_tokens);
  count("x-ratelimit-remaining-requests", rl.remaining_requests);
  count("x-ratelimit-remaining-tokens", rl.remaining_tokens);
  auto duration = [&](const char* name, std::optional<nanoseconds>& field) {
    if (auto v = lookup(name)) {
      if (auto d = parse_duration(*v))
        field = *d;
      else
        note_malformed(hints, name, *v);
    }
  };
  duration("x-ratelimit-reset-requests", rl.reset_requests);
  duration("x-ratelimit-reset-tokens", rl.reset_tokens);
  if (auto v = lookup("x-request-id"))
    hints.request_id.assign(trim(*v));
  return hints;
}

} // namespace embedrt
