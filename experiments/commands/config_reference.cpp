// `nnsplitter config-reference`: every config key with its type, default and meaning, as
// Markdown (docs/config-reference.md is this output; a test keeps them in sync).
#include <cstdio>

#include "core/io/atomic_file.h"
#include "experiments/cli.h"
#include "experiments/experiment.h"

namespace nns::exp {

Command add_config_reference_command(CLI::App& root) {
  auto out = std::make_shared<std::string>();
  CLI::App* sub = root.add_subcommand("config-reference",
                                      "Print the reference of every experiment config key (Markdown)");
  sub->add_option("--out", *out, "Write it to this file instead of stdout");
  Command c;
  c.app = sub;
  c.run = [out]() -> int {
    std::string md = experiment_schema().reference_markdown("nnsplitter configuration reference");
    md += "\nA sweep file adds a `sweep:` block mapping any of these keys to a list of values "
          "(Cartesian product, the last key varying fastest; runs numbered from 0 in that "
          "order). `protect --config` reads only the `splitter:` and `controller:` blocks.\n";
    if (out->empty()) {
      std::fputs(md.c_str(), stdout);
      return kExitOk;
    }
    io::write_file_atomically(*out, md);
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
