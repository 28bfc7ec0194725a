// Resource figures of the running process for `embedrt bench`: the
// runtime's own readers (actors/embedrt/proc_stats.hpp, also behind the
// process_* metrics), under the names the bench code uses.
#pragma once

#include "embedrt/proc_stats.hpp"

namespace embedrt::bench {

using embedrt::sample_usage;
using embedrt::thread_count;
using embedrt::usable_cores;
using embedrt::usage_sample;

} // namespace embedrt::bench
