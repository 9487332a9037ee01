// Subcommands around the secrets (core/splitter/secrets.h): `keygen` (a 256-bit key file for
// sealing), `restore` (exact restoration of an obfuscated weights file) and `infer` (split
// inference O_n − O_s next to the obfuscated and the restored model).
// Registered in experiments/main.cpp like the others:
//   add_keygen_command(app), add_restore_command(app), add_infer_command(app)
#pragma once

#include "experiments/cli.h"

namespace nns::exp {

Command add_keygen_command(CLI::App& root);
Command add_restore_command(CLI::App& root);
Command add_infer_command(CLI::App& root);

}  // namespace nns::exp
