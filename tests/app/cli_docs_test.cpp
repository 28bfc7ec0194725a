// docs/cli.md against the real binary: every option that `embedrt CMD
// --help` lists is documented in that command's section, every command
// documents its exit codes, and every environment variable the code reads is
// in the environment table (the reference must not drift from the tool).
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace {

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in{path};
  INFO("reading " << path);
  REQUIRE(in);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// The standard output of `embedrt ARGS` (which must exit 0).
std::string run_cli(const std::string& args) {
  std::string cmd = std::string{EMBEDRT_CLI_PATH} + " " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0)
    out.append(buf, n);
  int status = ::pclose(pipe);
  INFO("embedrt " << args << ":\n" << out);
  REQUIRE(status == 0);
  return out;
}

/// The text of the `## \`embedrt CMD\`` section of docs/cli.md.
std::string section_of(const std::string& doc, const std::string& cmd) {
  auto head = "\n## `embedrt " + cmd + "`";
  auto start = doc.find(head);
  INFO("docs/cli.md has no section " << head.substr(1));
  REQUIRE(start != std::string::npos);
  auto end = doc.find("\n## ", start + head.size());
  return doc.substr(start, end == std::string::npos ? end : end - start);
}

bool lower_or_digit(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/// The command names of a usage text: lines of two spaces, a lowercase word
/// and at least two spaces. (Scanned by hand: libstdc++'s <regex> trips
/// -Werror=maybe-uninitialized in sanitizer builds.)
std::set<std::string> command_names(const std::string& usage) {
  std::set<std::string> out;
  for (auto at = usage.find("\n  "); at != std::string::npos;
       at = usage.find("\n  ", at + 1)) {
    auto begin = at + 3;
    auto end = begin;
    while (end < usage.size() && usage[end] >= 'a' && usage[end] <= 'z')
      ++end;
    if (end > begin && usage.compare(end, 2, "  ") == 0)
      out.insert(usage.substr(begin, end - begin));
  }
  return out;
}

/// Every `--option` named in `text`.
std::set<std::string> option_names(const std::string& text) {
  std::set<std::string> out;
  for (auto at = text.find("--"); at != std::string::npos;
       at = text.find("--", at + 2)) {
    auto end = at + 2;
    if (end >= text.size() || !lower_or_digit(text[end]))
      continue;
    while (end < text.size() && (lower_or_digit(text[end]) || text[end] == '-'))
      ++end;
    out.insert(text.substr(at, end - at));
    at = end - 2;
  }
  return out;
}

/// Every quoted "EMBEDRT_..." or "OPENAI_..." name in a source text.
std::set<std::string> variable_names(const std::string& text) {
  std::set<std::string> out;
  for (auto at = text.find('"'); at != std::string::npos;
       at = text.find('"', at + 1)) {
    auto begin = at + 1;
    if (text.compare(begin, 8, "EMBEDRT_") != 0
        && text.compare(begin, 7, "OPENAI_") != 0)
      continue;
    auto end = text.find('_', begin) + 1;
    auto name_end = end;
    while (name_end < text.size()
           && ((text[name_end] >= 'A' && text[name_end] <= 'Z')
               || (text[name_end] >= '0' && text[name_end] <= '9')
               || text[name_end] == '_'))
      ++name_end;
    if (name_end > end && name_end < text.size() && text[name_end] == '"') {
      out.insert(text.substr(begin, name_end - begin));
      at = name_end;
    }
  }
  return out;
}

const std::filesystem::path source_dir{EMBEDRT_SOURCE_DIR};

} // namespace

TEST_CASE("docs/cli.md documents every option and the exit codes of every "
          "command") {
  auto doc = slurp(source_dir / "docs" / "cli.md");
  auto usage = run_cli("--help");
  auto commands = command_names(usage);
  REQUIRE(commands == std::set<std::string>{"bench", "embed", "mock", "serve"});
  for (const auto& cmd : commands) {
    auto section = section_of(doc, cmd);
    auto options = option_names(run_cli(cmd + " --help"));
    CHECK(options.size() > 3);
    for (const auto& opt : options) {
      if (opt == "--help")
        continue;
      INFO("embedrt " << cmd << " " << opt
                      << " is not documented in its section of docs/cli.md");
      CHECK(section.find("`" + opt) != std::string::npos);
    }
    INFO("the section of embedrt " << cmd << " names no exit codes");
    CHECK(section.find("xit code") != std::string::npos);
  }
}

TEST_CASE("docs/cli.md lists every environment variable the code reads") {
  auto doc = slurp(source_dir / "docs" / "cli.md");
  auto env_start = doc.find("### Environment variables");
  REQUIRE(env_start != std::string::npos);
  auto env_table = doc.substr(env_start);
  std::set<std::string> seen;
  for (const auto& dir : {"app", "actors", "protocol"})
    for (const auto& entry :
         std::filesystem::recursive_directory_iterator{source_dir / dir}) {
      auto ext = entry.path().extension();
      if (ext != ".cpp" && ext != ".hpp")
        continue;
      for (const auto& var : variable_names(slurp(entry.path())))
        seen.insert(var);
    }
  CHECK(seen.count("OPENAI_API_KEY") == 1);
  CHECK(seen.count("EMBEDRT_CONFIG") == 1);
  for (const auto& var : seen) {
    INFO(var << " is read by the code but not in docs/cli.md's environment "
                "variables");
    CHECK(env_table.find("`" + var + "`") != std::string::npos);
  }
}
