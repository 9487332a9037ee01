#include "core/io/signal_guard.h"

#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace nns::io {

namespace {

constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGUSR1};

// Touched by the handler: lock-free atomics only (async-signal-safe).
static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<int>::is_always_lock_free);
std::atomic<bool> g_stop{false};
std::atomic<int> g_signal{0};
std::atomic<bool> g_active{false};

void write_stderr(const char* s) { (void)!::write(STDERR_FILENO, s, std::strlen(s)); }

void on_signal(int sig) {
  g_signal.store(sig);
  if (!g_stop.exchange(true)) {
    write_stderr("\nnnsplitter: stopping at the next safe point (state is saved for resuming); "
                 "signal again to exit at once\n");
    return;
  }
  write_stderr("\nnnsplitter: second signal: exiting at once\n");
  struct ::sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);  // delivered when the handler returns: the default action ends the process
}

}  // namespace

SignalGuard::SignalGuard() {
  if (g_active.exchange(true)) throw std::logic_error("SignalGuard: another guard is alive");
  g_stop.store(false);
  g_signal.store(0);
  struct ::sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // system calls (reads, writes) resume instead of failing EINTR
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &old_[i]);
}

SignalGuard::~SignalGuard() {
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
  g_active.store(false);
}

const std::atomic<bool>* SignalGuard::flag() const { return &g_stop; }
bool SignalGuard::stopped() const { return g_stop.load(); }
int SignalGuard::last_signal() const { return g_signal.load(); }

}  // namespace nns::io
