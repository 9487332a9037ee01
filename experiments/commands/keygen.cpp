// `nnsplitter keygen --out KEY`: 32 random bytes (libsodium randombytes_buf) into a new file of
// mode 0600, for sealing secrets (`protect --key`, `restore --key`, `infer --key`). Never
// overwrites an existing file (exit 1).
#include <cstdio>
#include <memory>

#include "core/splitter/secrets.h"
#include "experiments/commands/secrets_commands.h"

namespace nns::exp {

Command add_keygen_command(CLI::App& root) {
  struct Args {
    std::string out;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand(
      "keygen", "Create a 256-bit key file (mode 0600) for sealing secrets");
  sub->add_option("--out", a->out, "Key file to create (never overwritten)")->required();
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    if (a->out.empty()) throw UsageError("--out must not be empty");
    splitter::write_new_key(a->out);
    if (a->json) {
      nlohmann::json j;
      j["key"] = a->out;
      j["bytes"] = splitter::kKeyBytes;
      print_json(j);
    } else {
      std::printf("wrote a new 256-bit key to %s (mode 0600); keep it secret: without it sealed "
                  "secrets cannot be opened\n",
                  a->out.c_str());
    }
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
