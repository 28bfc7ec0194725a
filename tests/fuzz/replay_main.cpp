// Runs a fuzz target's entry point over every file of the directories given
// on the command line (its seed corpus and any crash reproducers), without
// libFuzzer: the default (GCC) build runs each target's corpus as a ctest
// test, so a reproducer added to a corpus stays a regression test. A target
// signals a broken property with abort(), which fails the test.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  std::size_t runs = 0;
  for (int i = 1; i < argc; ++i)
    for (const auto& entry : std::filesystem::directory_iterator{argv[i]}) {
      if (!entry.is_regular_file())
        continue;
      std::ifstream in{entry.path(), std::ios::binary};
      std::string bytes{std::istreambuf_iterator<char>{in},
                        std::istreambuf_iterator<char>{}};
      std::vector<uint8_t> data(bytes.begin(), bytes.end());
      LLVMFuzzerTestOneInput(data.data(), data.size());
      ++runs;
    }
  std::printf("%zu inputs replayed\n", runs);
  return runs > 0 ? 0 : 1;
}
