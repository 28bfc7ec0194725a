// A small option parser for the `embedrt` subcommands.
//
// Accepts `--name value`, `--name=value`, flags (`--name`), repeated options,
// positional arguments (if declared), `--` (everything after it is
// positional) and `--help`/`-h`. An unknown option, a missing value, a value
// given to a flag or a repeated non-repeatable option is an error; commands
// print it with the usage and exit with `exit_usage` (2).
#pragma once

#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace embedrt::cli {

/// Exit code for bad command-line usage.
constexpr int exit_usage = 2;

/// Prints "embedrt COMMAND: MSG" and where the options are to stderr;
/// returns `exit_usage`.
int usage_error(std::string_view command, const std::string& msg);

/// Parses all of `text` as a number (an optional leading '+' allowed);
/// false on anything else, including an empty text or overflow.
template <class T>
bool parse_number(const std::string& text, T& out) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (first != last && *first == '+')
    ++first;
  auto [end, ec] = std::from_chars(first, last, out);
  return !text.empty() && ec == std::errc{} && end == last;
}

/// Raises the soft limit of open descriptors to the hard one (best effort):
/// many concurrent connections need many descriptors.
void raise_fd_limit();

class arg_parser {
 public:
  /// `usage` is the synopsis line (e.g. "embedrt mock [options]"),
  /// `summary` one sentence on what the command does.
  arg_parser(std::string usage, std::string summary);

  /// Declares a flag `--name` (no value).
  arg_parser& flag(std::string name, std::string help);

  /// Declares an option `--name VALUE`; with `repeatable` it may be given
  /// more than once (all values are kept, in order).
  arg_parser& option(std::string name, std::string value_name, std::string help,
                     bool repeatable = false);

  /// Allows positional arguments (described as `name` in the help).
  arg_parser& positionals(std::string name, std::string help);

  /// Parses the arguments after the command name. Returns false on an error
  /// (see `error()`). `--help` stops parsing and succeeds with
  /// `help_requested()` set.
  bool parse(const std::vector<std::string>& args);

  bool help_requested() const noexcept {
    return help_;
  }

  /// True if the flag or option was given.
  bool has(std::string_view name) const;

  /// True if the command declares the flag or option (given or not).
  bool declares(std::string_view name) const {
    return find(name) != nullptr;
  }

  /// The last value of an option, if given.
  std::optional<std::string> value(std::string_view name) const;

  /// All values of an option, in order (empty if not given).
  std::vector<std::string> values(std::string_view name) const;

  const std::vector<std::string>& positional() const noexcept {
    return positional_;
  }

  /// Typed getters: if the option was given, convert its (last) value into
  /// `out`, checking the inclusive range; an absent option leaves `out`
  /// unchanged. Return false on a bad value, with `error()` naming the
  /// option, the value and what was expected.
  bool get(std::string_view name, std::string& out);
  bool get(std::string_view name, int64_t& out, int64_t min, int64_t max);
  bool get(std::string_view name, uint64_t& out, uint64_t min, uint64_t max);
  bool get(std::string_view name, double& out, double min, double max);

  /// The last error.
  const std::string& error() const noexcept {
    return error_;
  }

  /// The usage text: synopsis, summary and one line per option.
  std::string help() const;

 private:
  /// Shared body of the integer overloads of `get`.
  template <class Int>
  bool get_integer(std::string_view name, Int& out, Int min, Int max);

  struct spec {
    std::string name;
    std::string value_name; // empty: a flag
    std::string help;
    bool repeatable = false;
  };

  const spec* find(std::string_view name) const;
  bool fail(std::string msg);

  std::string usage_;
  std::string summary_;
  std::vector<spec> specs_;
  std::optional<std::pair<std::string, std::string>> positional_spec_;
  std::map<std::string, std::vector<std::string>, std::less<>> given_;
  std::vector<std::string> positional_;
  std::string error_;
  bool help_ = false;
};

} // namespace embedrt::cli
