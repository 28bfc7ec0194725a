// Starts a child process with its stdout and stderr connected to pipes
// (shared by the tests that run the real `embedrt` binary).
#pragma once

#include <cerrno>
#include <fcntl.h>
#include <spawn.h>
#include <string>
#include <sys/types.h>
#include <unistd.h>
#include <vector>

namespace embedrt::test {

struct spawned_child {
  /// 0 on success, else an errno value (then no process was started).
  int rc = 0;
  pid_t pid = -1;
  /// Read ends of the child's stdout and stderr (owned by the caller).
  int out = -1;
  int err = -1;
};

/// Runs `args[0]` with `args` and the environment `envp` (null-terminated).
inline spawned_child spawn_with_pipes(std::vector<std::string> args,
                                      char* const* envp) {
  spawned_child child;
  int out[2];
  int err[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    child.rc = errno;
    return child;
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    child.rc = errno;
    close(out[0]);
    close(out[1]);
    return child;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  child.rc
      = posix_spawn(&child.pid, argv[0], &actions, nullptr, argv.data(), envp);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  close(err[1]);
  child.out = out[0];
  child.err = err[0];
  return child;
}

} // namespace embedrt::test
