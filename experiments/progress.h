// Progress reporting for long work: a live bar with rate and ETA on a terminal, plain periodic
// lines otherwise (logs, Slurm). Always on stderr, so stdout stays clean for --json.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace nns::exp {

class Progress {
 public:
  // total = number of units (batches); unit = what a unit is called in rates ("img").
  Progress(std::string label, int64_t total, bool enabled = true);
  // done units so far, units_per_item to convert to a rate (e.g. images per batch), and a
  // short stats string ("loss 0.41 acc 86.2%").
  void update(int64_t done, double items_done, const std::string& stats);
  // Ends the bar with a final line.
  void finish(const std::string& summary);
  double elapsed_seconds() const;

  // Whether stderr is a terminal (decides bar vs lines); NNS_PROGRESS=lines|bar|off overrides.
  static bool stderr_is_tty();
  // NNS_PROGRESS=off: no progress output at all (bars, lines, per-episode lines of protect).
  static bool silenced();
  static std::string format_duration(double seconds);

 private:
  std::string label_;
  int64_t total_;
  bool enabled_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_print_;
  int64_t last_done_ = -1;
};

}  // namespace nns::exp
