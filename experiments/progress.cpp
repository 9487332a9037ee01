#include "experiments/progress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace nns::exp {

bool Progress::stderr_is_tty() {
  const char* mode = std::getenv("NNS_PROGRESS");
  if (mode && std::strcmp(mode, "bar") == 0) return true;
  if (mode && std::strcmp(mode, "lines") == 0) return false;
  return isatty(fileno(stderr)) != 0;
}

bool Progress::silenced() {
  const char* mode = std::getenv("NNS_PROGRESS");
  return mode && std::strcmp(mode, "off") == 0;
}

std::string Progress::format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  int t = int(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02d:%02d", t / 60, t % 60);
  return buf;
}

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(stderr_is_tty()) {
  if (silenced()) enabled_ = false;
  start_ = last_print_ = std::chrono::steady_clock::now();
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, double items_done, const std::string& stats) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_print_).count();
  bool last = done >= total_;
  // Bar: redraw at most 10 times a second; lines: every 15 s (and at the end).
  if (tty_ ? (since < 0.1 && !last) : (since < 15.0 && !last)) return;
  if (done == last_done_) return;
  last_print_ = now;
  last_done_ = done;
  double el = elapsed_seconds();
  double rate = el > 0 ? items_done / el : 0;
  double eta = done > 0 ? el * double(total_ - done) / double(done) : -1;
  double frac = total_ > 0 ? double(done) / double(total_) : 1;
  if (tty_) {
    const int width = 24;
    int fill = int(frac * width);
    std::string bar(fill, '#');
    bar += std::string(width - fill, '.');
    std::fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld | %s | %.0f img/s | %s<%s  \x1b[K",
                 label_.c_str(), bar.c_str(), int(frac * 100), (long long)done,
                 (long long)total_, stats.c_str(), rate, format_duration(el).c_str(),
                 format_duration(eta).c_str());
  } else {
    std::fprintf(stderr, "%s %3d%% %lld/%lld | %s | %.0f img/s | elapsed %s eta %s\n",
                 label_.c_str(), int(frac * 100), (long long)done, (long long)total_,
                 stats.c_str(), rate, format_duration(el).c_str(), format_duration(eta).c_str());
  }
  std::fflush(stderr);
}

void Progress::finish(const std::string& summary) {
  if (!enabled_) return;
  if (tty_) std::fprintf(stderr, "\r\x1b[K");
  std::fprintf(stderr, "%s %s (%s)\n", label_.c_str(), summary.c_str(),
               format_duration(elapsed_seconds()).c_str());
  std::fflush(stderr);
}

}  // namespace nns::exp
