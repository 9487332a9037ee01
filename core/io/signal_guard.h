// The one way long commands (train, protect, run, sweep) react to SIGINT, SIGTERM and SIGUSR1.
//
// While a SignalGuard lives, the first of these signals sets flag(); long loops poll it and
// stop at a safe point (after a checkpoint, with resumable state), and the command exits 1
// saying how to resume. A second signal terminates the process at once (the handler restores
// the default action and re-raises, so the parent sees "killed by signal"): what an impatient
// Ctrl-C Ctrl-C means. Files are never left half-written either way (core/io/atomic_file.h).
// Slurm sends USR1 (sbatch --signal) before the time limit and TERM at it.
//
// The destructor restores the handlers that were installed before. One guard at a time: the
// flag is process-wide, so a second live guard throws std::logic_error.
#pragma once

#include <signal.h>

#include <atomic>

namespace nns::io {

class SignalGuard {
 public:
  SignalGuard();  // the flag starts cleared
  ~SignalGuard();
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

  const std::atomic<bool>* flag() const;  // for options structs (stop_flag)
  bool stopped() const;
  int last_signal() const;  // 0 when none

 private:
  struct ::sigaction old_[3];
};

}  // namespace nns::io
