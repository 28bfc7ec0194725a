#include "cli_args.hpp"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <sys/resource.h>

namespace embedrt::cli {

arg_parser::arg_parser(std::string usage, std::string summary)
    : usage_(std::move(usage)), summary_(std::move(summary)) {
  // nop
}

arg_parser& arg_parser::flag(std::string name, std::string help) {
  specs_.push_back(spec{std::move(name), {}, std::move(help), false});
  return *this;
}

arg_parser& arg_parser::option(std::string name, std::string value_name,
                               std::string help, bool repeatable) {
  specs_.push_back(spec{std::move(name), std::move(value_name), std::move(help),
                        repeatable});
  return *this;
}

arg_parser& arg_parser::positionals(std::string name, std::string help) {
  positional_spec_.emplace(std::move(name), std::move(help));
  return *this;
}

const arg_parser::spec* arg_parser::find(std::string_view name) const {
  for (const auto& s : specs_)
    if (s.name == name)
      return &s;
  return nullptr;
}

bool arg_parser::fail(std::string msg) {
  error_ = std::move(msg);
  return false;
}

bool arg_parser::parse(const std::vector<std::string>& args) {
  given_.clear();
  positional_.clear();
  error_.clear();
  help_ = false;
  bool only_positional = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    bool is_option = !only_positional && arg.size() > 1 && arg[0] == '-';
    if (!is_option) {
      if (!positional_spec_)
        return fail("unexpected argument '" + std::string{arg} + "'");
      positional_.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      return true;
    }
    if (arg.substr(0, 2) != "--")
      return fail("unknown option '" + std::string{arg}
                  + "' (options start with --)");
    auto body = arg.substr(2);
    std::optional<std::string_view> inline_value;
    if (auto eq = body.find('='); eq != std::string_view::npos) {
      inline_value = body.substr(eq + 1);
      body = body.substr(0, eq);
    }
    const spec* s = find(body);
    if (s == nullptr)
      return fail("unknown option '--" + std::string{body} + "'");
    auto& values = given_[s->name];
    if (!values.empty() && !s->repeatable)
      return fail("option '--" + s->name + "' is given more than once");
    if (s->value_name.empty()) {
      if (inline_value)
        return fail("flag '--" + s->name + "' takes no value");
      values.emplace_back();
      continue;
    }
    if (inline_value) {
      values.emplace_back(*inline_value);
      continue;
    }
    if (i + 1 >= args.size())
      return fail("option '--" + s->name + "' needs a value (" + s->value_name
                  + ")");
    values.push_back(args[++i]);
  }
  return true;
}

bool arg_parser::has(std::string_view name) const {
  return given_.find(name) != given_.end();
}

std::optional<std::string> arg_parser::value(std::string_view name) const {
  auto i = given_.find(name);
  if (i == given_.end() || i->second.empty())
    return std::nullopt;
  return i->second.back();
}

std::vector<std::string> arg_parser::values(std::string_view name) const {
  auto i = given_.find(name);
  return i == given_.end() ? std::vector<std::string>{} : i->second;
}

bool arg_parser::get(std::string_view name, std::string& out) {
  if (auto v = value(name))
    out = std::move(*v);
  return true;
}

template <class Int>
bool arg_parser::get_integer(std::string_view name, Int& out, Int min,
                             Int max) {
  auto v = value(name);
  if (!v)
    return true;
  Int x = 0;
  if (!parse_number(*v, x) || x < min || x > max)
    return fail("option '--" + std::string{name} + "': '" + *v
                + "' is not an integer in [" + std::to_string(min) + ", "
                + std::to_string(max) + "]");
  out = x;
  return true;
}

bool arg_parser::get(std::string_view name, int64_t& out, int64_t min,
                     int64_t max) {
  return get_integer(name, out, min, max);
}

bool arg_parser::get(std::string_view name, uint64_t& out, uint64_t min,
                     uint64_t max) {
  return get_integer(name, out, min, max);
}

bool arg_parser::get(std::string_view name, double& out, double min,
                     double max) {
  auto v = value(name);
  if (!v)
    return true;
  double x = 0;
  if (!parse_number(*v, x) || !std::isfinite(x) || x < min || x > max)
    return fail("option '--" + std::string{name} + "': '" + *v
                + "' is not a number in [" + std::to_string(min) + ", "
                + std::to_string(max) + "]");
  out = x;
  return true;
}

std::string arg_parser::help() const {
  std::string out = "usage: " + usage_ + "\n\n" + summary_ + "\n";
  std::vector<std::pair<std::string, std::string>> rows;
  for (const auto& s : specs_) {
    auto left = "--" + s.name;
    if (!s.value_name.empty())
      left += " " + s.value_name;
    auto right = s.help;
    if (s.repeatable)
      right += " (repeatable)";
    rows.emplace_back(std::move(left), std::move(right));
  }
  rows.emplace_back("--help", "show this help");
  if (positional_spec_)
    rows.emplace_back(positional_spec_->first, positional_spec_->second);
  std::size_t width = 0;
  for (const auto& row : rows)
    width = std::max(width, row.first.size());
  out += "\noptions:\n";
  for (const auto& [left, right] : rows) {
    out += "  " + left + std::string(width - left.size() + 2, ' ') + right
        + "\n";
  }
  return out;
}

int usage_error(std::string_view command, const std::string& msg) {
  std::cerr << "embedrt " << command << ": " << msg << "\n(run 'embedrt "
            << command << " --help' for the options)\n";
  return exit_usage;
}

void raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

} // namespace embedrt::cli
