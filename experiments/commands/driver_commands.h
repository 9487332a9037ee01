// The experiment driver's subcommands: `run` (one experiment from a YAML config), `sweep` (a
// Cartesian product of configs, locally or as a Slurm array) and `collect` (a sweep's summary).
#pragma once

#include "experiments/cli.h"

namespace nns::exp {

Command add_run_command(CLI::App& root);
Command add_sweep_command(CLI::App& root);
Command add_collect_command(CLI::App& root);

}  // namespace nns::exp
