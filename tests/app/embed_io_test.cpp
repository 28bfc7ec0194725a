// `embedrt embed`'s building blocks without the runtime: the input parser
// and line reader, the output formats, resume scanning (torn tails, f32
// index), the id set and the progress line.
#include "embed/id_set.hpp"
#include "embed/jsonl_input.hpp"
#include "embed/output.hpp"
#include "embed/progress.hpp"
#include "embed/resume.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <random>
#include <rapidjson/document.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace embedrt::app::embed;

namespace {

/// A temporary file, removed at the end of the test.
struct temp_file {
  std::string path;
  int fd = -1;

  explicit temp_file(const std::string& content = {}) {
    char tmpl[] = "/tmp/embedrt-embed-io-XXXXXX";
    fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    path = tmpl;
    write(content);
    ::lseek(fd, 0, SEEK_SET);
  }

  ~temp_file() {
    ::close(fd);
    ::unlink(path.c_str());
  }

  void write(const std::string& s) const {
    REQUIRE(::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
  }

  uint64_t size() const {
    struct stat st {};
    ::fstat(fd, &st);
    return static_cast<uint64_t>(st.st_size);
  }

  std::string read_all() const {
    std::string out;
    char buf[4096];
    ssize_t n = 0;
    off_t off = 0;
    while ((n = ::pread(fd, buf, sizeof(buf), off)) > 0) {
      out.append(buf, static_cast<std::size_t>(n));
      off += n;
    }
    return out;
  }
};

/// All lines of `content` through a line_reader reading `chunk` bytes at a
/// time.
std::vector<line_reader::line> read_lines(const std::string& content,
                                          std::size_t max_line,
                                          std::size_t chunk,
                                          std::vector<std::string>& texts) {
  temp_file f{content};
  line_reader rd{f.fd, max_line, chunk};
  std::vector<line_reader::line> out;
  line_reader::line ln;
  for (;;) {
    auto st = rd.next(ln);
    if (st == line_reader::status::eof)
      break;
    if (st == line_reader::status::need_input) {
      REQUIRE(rd.fill() >= 0);
      continue;
    }
    texts.emplace_back(ln.text);
    out.push_back(ln);
  }
  CHECK(rd.consumed() == content.size());
  return out;
}

} // namespace

TEST_CASE("embed input: objects with string and integer ids") {
  auto p = parse_input_line(R"({"id":"doc-1","text":"hello world"})", 7);
  REQUIRE(p.what == parsed_line::kind::record);
  CHECK(p.id == R"("doc-1")");
  CHECK(p.text == "hello world");
  p = parse_input_line(R"(  {"text":"x","id":42,"extra":[1,2]})", 3);
  REQUIRE(p.what == parsed_line::kind::record);
  CHECK(p.id == "42");
  CHECK(p.text == "x");
  p = parse_input_line(R"({"id":-5,"text":"neg"})", 1);
  REQUIRE(p.what == parsed_line::kind::record);
  CHECK(p.id == "-5");
  // The string "42" and the number 42 are different ids; escapes are
  // normalised so that equal strings have one canonical form.
  p = parse_input_line(R"({"id":"42","text":"t"})", 1);
  CHECK(p.id == R"("42")");
  p = parse_input_line(R"({"id":"a\u0062","text":"t"})", 1);
  CHECK(p.id == R"("ab")");
  p = parse_input_line(R"({"id":"q\"uote","text":"t"})", 1);
  CHECK(p.id == R"("q\"uote")");
  // Text escapes are decoded.
  p = parse_input_line(R"({"id":1,"text":"line\nbreak \u00e9"})", 1);
  CHECK(p.text == "line\nbreak \xc3\xa9");
}

TEST_CASE("embed input: an object without id takes its line number") {
  auto p = parse_input_line(R"({"text":"no id here"})", 12);
  REQUIRE(p.what == parsed_line::kind::record);
  CHECK(p.id == "12");
}

TEST_CASE("embed input: plain lines are texts with their line number as id") {
  auto p = parse_input_line("The quick brown fox", 3);
  REQUIRE(p.what == parsed_line::kind::record);
  CHECK(p.id == "3");
  CHECK(p.text == "The quick brown fox");
  p = parse_input_line("windows line\r", 4);
  CHECK(p.text == "windows line");
  p = parse_input_line("[not an object]", 5);
  REQUIRE(p.what == parsed_line::kind::record);
  CHECK(p.text == "[not an object]");
}

TEST_CASE("embed input: blank lines are skipped") {
  CHECK(parse_input_line("", 1).what == parsed_line::kind::blank);
  CHECK(parse_input_line("   \t ", 1).what == parsed_line::kind::blank);
  CHECK(parse_input_line("\r", 1).what == parsed_line::kind::blank);
}

TEST_CASE("embed input: bad lines say what is wrong") {
  auto p = parse_input_line(R"({"id":1,"text":"unterminated)", 9);
  CHECK(p.what == parsed_line::kind::bad);
  CHECK_THAT(p.error, Catch::Contains("not a valid JSON object"));
  CHECK_THAT(p.error, Catch::Contains("offset"));
  p = parse_input_line(R"({"id":1.5,"text":"x"})", 1);
  CHECK(p.what == parsed_line::kind::bad);
  CHECK(p.error == "\"id\" must be a string or an integer");
  p = parse_input_line(R"({"id":"a","text":3})", 1);
  CHECK(p.what == parsed_line::kind::bad);
  CHECK(p.error == "\"text\" must be a string");
  CHECK(p.id == R"("a")"); // the reject names the id it could read
  p = parse_input_line(R"({"id":"a"})", 1);
  CHECK(p.what == parsed_line::kind::bad);
  CHECK(p.error == "no \"text\" member");
  p = parse_input_line(R"({"id":"a","text":"x"} trailing)", 1);
  CHECK(p.what == parsed_line::kind::bad);
  // Invalid UTF-8 inside the JSON is caught by the parser.
  p = parse_input_line("{\"id\":1,\"text\":\"\xff\xfe\"}", 1);
  CHECK(p.what == parsed_line::kind::bad);
}

TEST_CASE("embed line reader: lines across buffer boundaries") {
  std::string content = "first\nsecond line\n\nlast without newline";
  for (std::size_t chunk : {1u, 3u, 7u, 4096u}) {
    std::vector<std::string> texts;
    auto lines = read_lines(content, 1024, chunk, texts);
    REQUIRE(lines.size() == 4);
    CHECK(texts
          == std::vector<std::string>{"first", "second line", "",
                                      "last without newline"});
    CHECK(lines[0].number == 1);
    CHECK(lines[3].number == 4);
    CHECK(lines[2].newline);
    CHECK_FALSE(lines[3].newline);
  }
}

TEST_CASE("embed line reader: an overlong line is reported and skipped") {
  std::string content
      = "short\n" + std::string(100, 'x') + "\nafter\n" + std::string(50, 'y');
  for (std::size_t chunk : {5u, 16u, 1000u}) {
    std::vector<std::string> texts;
    auto lines = read_lines(content, 20, chunk, texts);
    REQUIRE(lines.size() == 4);
    CHECK(texts[0] == "short");
    CHECK(lines[1].too_long);
    CHECK(lines[1].number == 2);
    CHECK(texts[2] == "after");
    CHECK(lines[2].number == 3);
    CHECK(lines[3].too_long);
  }
}

TEST_CASE("embed output: jsonl records read back as the same floats") {
  std::mt19937 rng{7};
  std::uniform_real_distribution<float> dist{-1.0f, 1.0f};
  std::vector<float> v;
  for (int i = 0; i < 200; ++i)
    v.push_back(dist(rng));
  v.push_back(0.0f);
  v.push_back(-0.0f);
  v.push_back(1e-38f);
  v.push_back(std::numeric_limits<float>::denorm_min());
  v.push_back(std::numeric_limits<float>::max());
  v.push_back(0.1f);
  std::string line;
  append_jsonl_record(line, R"("doc-\"7")", v);
  REQUIRE(line.back() == '\n');
  CHECK(line.rfind(R"({"id":"doc-\"7","embedding":[)", 0) == 0);
  rapidjson::Document doc;
  doc.Parse(line.data(), line.size() - 1);
  REQUIRE_FALSE(doc.HasParseError());
  CHECK(std::string{doc["id"].GetString()} == "doc-\"7");
  // Read the numbers back as float32 from their text, as a consumer would.
  auto arr_start = line.find('[') + 1;
  auto arr_end = line.rfind(']');
  std::string arr = line.substr(arr_start, arr_end - arr_start);
  std::vector<float> back;
  const char* p = arr.c_str();
  char* end = nullptr;
  for (;;) {
    back.push_back(std::strtof(p, &end));
    REQUIRE(end != p);
    if (*end != ',')
      break;
    p = end + 1;
  }
  REQUIRE(back.size() == v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    CHECK(std::memcmp(&back[i], &v[i], sizeof(float)) == 0);
  // Shortest form: 0.1f is written as 0.1, not 0.100000001.
  CHECK(line.find(",0.1]") != std::string::npos);
}

TEST_CASE("embed output: rejects lines") {
  std::string out;
  append_reject(out, R"("a")", 3, "invalid_input", "line 3: \"bad\"\n");
  append_reject(out, {}, 4, "invalid_input", "not JSON");
  CHECK(out
        == "{\"id\":\"a\",\"line\":3,\"error\":\"invalid_input\",\"message\":"
           "\"line 3: \\\"bad\\\"\\n\"}\n"
           "{\"id\":null,\"line\":4,\"error\":\"invalid_input\",\"message\":"
           "\"not JSON\"}\n");
}

TEST_CASE("embed output: f32 rows are little-endian float32") {
  std::string out;
  append_f32(out, {1.0f, -2.5f});
  REQUIRE(out.size() == 8);
  const unsigned char expect[]
      = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0};
  CHECK(std::memcmp(out.data(), expect, 8) == 0);
}

TEST_CASE("embed resume: jsonl output with a torn last line") {
  std::string good;
  append_jsonl_record(good, R"("a")", {0.5f, -0.5f});
  append_jsonl_record(good, "7", {1.0f, 0.0f});
  std::string torn = R"({"id":"b","embedding":[0.25,)";
  temp_file f{good + torn};
  id_set ids;
  auto r = scan_jsonl_output(f.fd, ids);
  REQUIRE(r.error.empty());
  CHECK(r.records == 2);
  CHECK(r.dims == 2);
  CHECK(r.keep_bytes == good.size());
  CHECK(r.torn_bytes == torn.size());
  CHECK(ids.contains(R"("a")"));
  CHECK(ids.contains("7"));
  CHECK_FALSE(ids.contains(R"("7")"));
  CHECK_FALSE(ids.contains(R"("b")"));
}

TEST_CASE("embed resume: a complete last line without newline is torn too") {
  std::string good;
  append_jsonl_record(good, R"("a")", {0.5f, -0.5f});
  std::string last;
  append_jsonl_record(last, R"("b")", {0.5f, -0.5f});
  last.pop_back();
  temp_file f{good + last};
  id_set ids;
  auto r = scan_jsonl_output(f.fd, ids);
  REQUIRE(r.error.empty());
  CHECK(r.records == 1);
  CHECK(r.keep_bytes == good.size());
  CHECK_FALSE(ids.contains(R"("b")"));
}

TEST_CASE("embed resume: empty and clean outputs") {
  temp_file empty;
  id_set ids;
  auto r = scan_jsonl_output(empty.fd, ids);
  CHECK(r.error.empty());
  CHECK(r.records == 0);
  CHECK(r.torn_bytes == 0);
  std::string good;
  for (int i = 0; i < 1000; ++i)
    append_jsonl_record(good, std::to_string(i), {0.5f, 0.25f, 0.125f});
  temp_file f{good};
  id_set ids2;
  r = scan_jsonl_output(f.fd, ids2);
  CHECK(r.error.empty());
  CHECK(r.records == 1000);
  CHECK(r.keep_bytes == good.size());
  CHECK(r.torn_bytes == 0);
  CHECK(ids2.size() == 1000);
}

TEST_CASE("embed resume: refuses what is not its own output") {
  auto scan = [](const std::string& content) {
    temp_file f{content};
    id_set ids;
    return scan_jsonl_output(f.fd, ids).error;
  };
  std::string rec;
  append_jsonl_record(rec, "1", {0.5f, 0.5f});
  CHECK_THAT(scan("hello\n" + rec), Catch::Contains("line 1: not JSON"));
  CHECK_THAT(scan(rec + "{\"id\":2}\n"),
             Catch::Contains("line 2: not an {\"id\",\"embedding\"} object"));
  std::string other;
  append_jsonl_record(other, "2", {0.5f, 0.5f, 0.5f});
  CHECK_THAT(scan(rec + other), Catch::Contains("3 dimensions"));
  CHECK_THAT(scan("{\"id\":1,\"embedding\":[]}\n"),
             Catch::Contains("empty embedding"));
}

TEST_CASE("embed resume: an id written twice (repeated in the input) is "
          "done") {
  std::string rec;
  append_jsonl_record(rec, "1", {0.5f, 0.5f});
  temp_file f{rec + rec};
  id_set ids;
  auto r = scan_jsonl_output(f.fd, ids);
  CHECK(r.error.empty());
  CHECK(r.records == 2);
  CHECK(ids.size() == 1);
  CHECK(ids.contains("1"));
}

TEST_CASE("embed resume: f32 output written through the sink") {
  temp_file data;
  temp_file index;
  {
    output_sink sink{output_format::f32, fd_writer{data.fd, true},
                     fd_writer{index.fd, true}};
    REQUIRE(sink.write(R"("a")", {1.0f, 2.0f, 3.0f}));
    REQUIRE(sink.write("5", {4.0f, 5.0f, 6.0f}));
    REQUIRE(sink.checkpoint());
  }
  CHECK(data.size() == 24);
  CHECK(index.read_all()
        == "{\"id\":\"a\",\"row\":0,\"dims\":3}\n"
           "{\"id\":5,\"row\":1,\"dims\":3}\n");
  std::string bytes = data.read_all();
  float second[3];
  std::memcpy(second, bytes.data() + 12, 12);
  CHECK(second[0] == 4.0f);
  CHECK(second[2] == 6.0f);
  ::lseek(index.fd, 0, SEEK_SET);
  id_set ids;
  auto r = scan_f32_output(index.fd, data.size(), ids);
  REQUIRE(r.error.empty());
  CHECK(r.records == 2);
  CHECK(r.dims == 3);
  CHECK(r.keep_bytes == 24);
  CHECK(r.torn_bytes == 0);
  CHECK(r.torn_index_bytes == 0);
  CHECK(ids.contains("5"));
}

TEST_CASE("embed resume: f32 torn index line and rows without index") {
  std::string index_text;
  append_index_record(index_text, R"("a")", 0, 2);
  append_index_record(index_text, R"("b")", 1, 2);
  auto keep = index_text.size();
  index_text += R"({"id":"c","ro)";
  temp_file index{index_text};
  // Three complete rows and half of a fourth: rows 2 and 3 have no index
  // line, so they are dropped.
  id_set ids;
  auto r = scan_f32_output(index.fd, 3 * 8 + 4, ids);
  REQUIRE(r.error.empty());
  CHECK(r.records == 2);
  CHECK(r.keep_index_bytes == keep);
  CHECK(r.torn_index_bytes == index_text.size() - keep);
  CHECK(r.keep_bytes == 16);
  CHECK(r.torn_bytes == 12);
}

TEST_CASE("embed resume: f32 index lines whose rows are missing are dropped") {
  std::string index_text;
  append_index_record(index_text, "1", 0, 4);
  auto keep = index_text.size();
  append_index_record(index_text, "2", 1, 4);
  append_index_record(index_text, "3", 2, 4);
  temp_file index{index_text};
  id_set ids;
  // Only the first row (16 bytes) and part of the second made it.
  auto r = scan_f32_output(index.fd, 20, ids);
  REQUIRE(r.error.empty());
  CHECK(r.records == 1);
  CHECK(r.keep_index_bytes == keep);
  CHECK(r.torn_index_bytes == index_text.size() - keep);
  CHECK(r.keep_bytes == 16);
  CHECK(r.torn_bytes == 4);
  CHECK_FALSE(ids.contains("2"));
}

TEST_CASE("embed resume: f32 index out of sequence is refused") {
  std::string index_text;
  append_index_record(index_text, "1", 0, 4);
  append_index_record(index_text, "2", 2, 4);
  temp_file index{index_text};
  id_set ids;
  auto r = scan_f32_output(index.fd, 64, ids);
  CHECK_THAT(r.error, Catch::Contains("row 2, expected 1"));
}

TEST_CASE("embed id set: exact membership for many ids") {
  id_set ids;
  for (int i = 0; i < 200000; ++i)
    REQUIRE(ids.insert("\"doc-" + std::to_string(i) + "\""));
  CHECK(ids.size() == 200000);
  for (int i = 0; i < 200000; i += 997)
    CHECK(ids.contains("\"doc-" + std::to_string(i) + "\""));
  CHECK_FALSE(ids.contains("\"doc-200000\""));
  CHECK_FALSE(ids.contains("\"doc-1"));
  CHECK_FALSE(ids.insert("\"doc-5\""));
  CHECK(ids.insert(""));
  CHECK_FALSE(ids.insert(""));
  CHECK(ids.size() == 200001);
}

TEST_CASE("embed progress: the line with and without a known input size") {
  job_counts c;
  c.written = 12345;
  c.skipped = 10;
  c.failed = 2;
  c.bytes_read = 250;
  c.bytes_total = 1000;
  auto line = render_progress(c, 5.0);
  CHECK(line.rfind("[#####---------------]  25%", 0) == 0);
  CHECK_THAT(line, Catch::Contains("12,345 written"));
  CHECK_THAT(line, Catch::Contains("2,469/s"));
  CHECK_THAT(line, Catch::Contains("ETA 0:15"));
  CHECK_THAT(line, Catch::Contains("10 skipped"));
  CHECK_THAT(line, Catch::Contains("2 failed"));
  c.bytes_total = 0;
  line = render_progress(c, 5.0);
  CHECK(line.rfind("12,345 written  2,469/s  10 skipped", 0) == 0);
  CHECK(line.find("ETA") == std::string::npos);
  CHECK(group_digits(0) == "0");
  CHECK(group_digits(999) == "999");
  CHECK(group_digits(1000) == "1,000");
  CHECK(group_digits(1234567) == "1,234,567");
  CHECK(format_duration(59.4) == "0:59");
  CHECK(format_duration(3725) == "1:02:05");
}

TEST_CASE("embed progress: the line fits the terminal, the counts stay") {
  job_counts c;
  c.written = 1234567;
  c.skipped = 7654321;
  c.failed = 42;
  c.bytes_read = 500;
  c.bytes_total = 1000;
  auto full = render_progress(c, 3.0);
  REQUIRE(full.size() > 79);
  for (std::size_t width : {79u, 70u, 60u, 50u, 40u, 30u, 12u}) {
    auto line = render_progress(c, 3.0, width);
    INFO("width " << width << ": '" << line << "'");
    CHECK(line.size() <= width);
    if (width >= 40)
      CHECK_THAT(line, Catch::Contains("42 failed"));
  }
  // The bar goes first, then the ETA.
  auto line = render_progress(c, 3.0, 79);
  CHECK(line.find('[') == std::string::npos);
  CHECK_THAT(line, Catch::StartsWith(" 50%  1,234,567 written"));
  CHECK(render_progress(c, 3.0, 400) == full);
}
