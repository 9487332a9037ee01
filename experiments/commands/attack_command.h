// `nnsplitter attack`: the attack units (experiments/attack_suite.h) on an obfuscated weights
// file, each unit's keys as options. Registered in experiments/main.cpp like the others:
//   add_attack_command(app)
#pragma once

#include "experiments/cli.h"

namespace nns::exp {

Command add_attack_command(CLI::App& root);

}  // namespace nns::exp
