// libFuzzer target: the input of `embedrt embed` (app/embed/jsonl_input.*):
// the bounded line reader over a pipe, and the parser of each line it hands
// out. The reader must hand out every byte of the input exactly once (as
// lines or as the discarded rest of an overlong line) and the parser must
// classify every line (record, blank, bad) without crashing.
#include "embed/jsonl_input.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fcntl.h>
#include <unistd.h>

using embedrt::app::embed::line_reader;
using embedrt::app::embed::parse_input_line;
using embedrt::app::embed::parsed_line;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  // Small limits, so that overlong lines and buffer refills are exercised.
  constexpr std::size_t max_line = 256;
  constexpr std::size_t chunk = 64;
  if (size > 60000) // stays below the pipe's capacity: one write fills it
    return 0;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    std::abort();
  if (size > 0 && write(fds[1], data, size) != static_cast<ssize_t>(size))
    std::abort();
  close(fds[1]);
  line_reader reader{fds[0], max_line, chunk};
  line_reader::line line;
  uint64_t last_number = 0;
  for (int rounds = 0; rounds < 1'000'000; ++rounds) {
    auto st = reader.next(line);
    if (st == line_reader::status::eof)
      break;
    if (st == line_reader::status::need_input) {
      if (reader.fill() < 0)
        std::abort();
      continue;
    }
    if (line.number != last_number + 1 || line.text.size() > max_line)
      std::abort();
    last_number = line.number;
    if (line.too_long)
      continue;
    auto parsed = parse_input_line(line.text, line.number);
    if (parsed.what == parsed_line::kind::record && parsed.id.empty())
      std::abort();
    if (parsed.what == parsed_line::kind::bad && parsed.error.empty())
      std::abort();
  }
  close(fds[0]);
  if (!reader.eof() || reader.consumed() != size)
    std::abort();
  return 0;
}
