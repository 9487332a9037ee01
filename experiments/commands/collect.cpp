// `nnsplitter collect DIR`: merges the complete run files of a sweep folder into DIR/summary.h5
// and DIR/summary.csv (docs/results-format.md, "Sweep summaries"). Runs without a complete file
// are listed in the `missing` attribute and warned about.
#include <cstdio>
#include <filesystem>

#include "experiments/commands/driver_commands.h"
#include "experiments/experiment.h"
#include "experiments/sweep.h"

namespace nns::exp {

namespace fs = std::filesystem;

Command add_collect_command(CLI::App& root) {
  struct Args {
    std::string dir;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand(
      "collect", "Merge a sweep's complete results into DIR/summary.h5 and DIR/summary.csv");
  sub->add_option("dir", a->dir, "Sweep folder (<output.dir>/<name>, holding runs.tsv) or the "
                                 "sweep file")
      ->required();
  sub->add_flag("--json", a->json, "Print the table as JSON on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    fs::path dir = a->dir;
    if (fs::is_regular_file(dir)) dir = Sweep::load(experiment_schema(), a->dir).dir();
    if (!fs::is_directory(dir)) throw UsageError(a->dir + ": no such folder");
    if (fs::is_regular_file(a->dir))
      refuse_overwriting_inputs({{"summary", (dir / "summary.h5").string()},
                                 {"summary", (dir / "summary.csv").string()}},
                                {{"dir", a->dir}});
    Summary s = read_summary(dir);
    const size_t total = s.rows.size() + s.missing.size();
    if (!s.missing.empty()) {
      std::string list;
      for (auto m : s.missing) list += (list.empty() ? "" : ", ") + std::to_string(m);
      std::fprintf(stderr, "collect: warning: %zu of %zu runs have no complete result: %s\n",
                   s.missing.size(), total, list.c_str());
    }
    if (s.rows.empty())
      throw std::runtime_error("no complete run in " + dir.string() + " (" +
                               std::to_string(total) + " listed in runs.tsv)");
    write_summary(dir, s);
    std::fprintf(stderr, "collect: wrote %s and %s (%zu runs, %zu missing)\n",
                 (dir / "summary.h5").c_str(), (dir / "summary.csv").c_str(), s.rows.size(),
                 s.missing.size());
    if (a->json) {
      nlohmann::json j = summary_json(s);
      j["dir"] = dir.string();
      j["summary_h5"] = (dir / "summary.h5").string();
      j["summary_csv"] = (dir / "summary.csv").string();
      print_json(j);
    } else {
      std::fputs(summary_text(s).c_str(), stdout);
    }
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
