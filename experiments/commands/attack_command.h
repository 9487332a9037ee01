// `nnsplitter attack`: the attacks of SPEC §2 on an obfuscated weights file (norm clipping,
// fine-tuning, boundary reset). Registered in experiments/main.cpp like the others:
//   add_attack_command(app)
#pragma once

#include "experiments/cli.h"

namespace nns::exp {

Command add_attack_command(CLI::App& root);

}  // namespace nns::exp
