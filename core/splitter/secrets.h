// NNSplitter secrets (SPEC.md §1 "Secrets and restoration", §5 "Secrets"): per obfuscated
// tensor, the sorted flat indexes of the changed entries and their original values; writing
// and reading them (plain or sealed), the model fingerprint they are bound to, and restoring a
// model bit for bit.
//
// Fingerprint (fingerprint()): lower-case hex SHA-256 (libsodium crypto_hash_sha256) of
//     "nnsplitter-fingerprint-1\n"
//   then, for every state_dict entry in byte-wise ascending order of its key (so that the
//   tensor order of a file does not matter):
//     u64le(len(key))   key (UTF-8 bytes)
//     u64le(len(dtype)) dtype ("F32" or "I64", the in-memory dtype)
//     u64le(ndim)       ndim x i64le(dim)
//     u64le(nbytes)     the raw little-endian element bytes (bit patterns: -0.0 != +0.0)
//   tools/apply_secrets.py implements the same encoding.
//
// Secrets file (unsealed): safetensors with, per obfuscated tensor in the order of
// Secrets::tensors, "<key>.index" (I64 [n], strictly ascending flat indexes into `key`) and
// "<key>.original" (F32 [n], the original values), and __metadata__:
//   format = "nnsplitter-secrets-1"      (required when reading)
//   fingerprint = fingerprint of the OBFUSCATED model the secrets apply to (required)
//   original_fingerprint = fingerprint of the model once restored (required when writing and
//                          when reading; diff_secrets records it). apply_secrets computes the
//                          fingerprint the restored model WILL have and refuses, before it
//                          touches the model, when it differs: a flipped index bit, a changed
//                          original value, removed entries are all caught. Files written before
//                          this was required (by `protect`, which did not record it) are refused
//                          with "secrets lack original_fingerprint ... re-create them"; the
//                          format string did not change, since a file that has the field is
//                          fully checkable whatever wrote it.
//   What this proves: an unsealed file is checked against ACCIDENTAL damage and naive edits;
//   someone who edits the originals AND recomputes original_fingerprint goes unnoticed (there is
//   no secret in an unsealed file). Sealing authenticates the whole content.
//   total = number of secret entries; counts = JSON object {key: n} (both recomputed on write,
//           checked on read when present)
//   anything else (arch, c, eps, clamp, ...) is free-form and kept as is.
// Files are written atomically (temporary file, fsync, rename) with mode 0600.
//
// Sealed file (write_secrets with a key):
//   bytes 0..7    "NNSSEAL1"
//   bytes 8..15   u64le L: length of the public header
//   L bytes       public header, compact JSON exactly as nlohmann::json::dump() writes it:
//                   {"fingerprint":"<64 hex>","format":"nnsplitter-sealed-secrets-1"}
//                 (any other key, a missing key, or bytes that differ from the canonical dump
//                 are refused)
//   24 bytes      nonce (randombytes_buf)
//   the rest      crypto_aead_xchacha20poly1305_ietf_encrypt(unsealed safetensors bytes,
//                 additional data = the fingerprint string, nonce, key): ciphertext + 16-byte tag
//   The key is a key file of exactly 32 raw bytes (write_new_key / `nnsplitter keygen`).
//   After decryption the inner file's fingerprint must equal the public one.
//
// Errors are std::runtime_error naming the file:
//   sealed file, no key      "<path>: secrets file is sealed: pass --key"
//   wrong key / any flipped byte in nonce or ciphertext
//                            "<path>: authentication failed: wrong key or tampered file"
//   public fingerprint differs from the expected one (checked before decrypting)
//                            "<path>: secrets belong to another model (secrets are for <fp1>,
//                             this model is <fp2>)"
//   unsealed file with a key (a downgrade: anyone can write an unsealed file)
//                            "<path>: secrets file is not sealed, but a key was given: ..."
//   unsealed file where sealed secrets are required (require_sealed: the obfuscated weights
//   file's metadata has kSealedMark, see mark_secrets_sealed)
//                            "<path>: secrets file is not sealed, but the secrets of <weights>
//                             were sealed ..."
//   damaged magic ("NNSSEAL1" with up to 3 bytes changed, or a sealed header after it)
//                            "<path>: this looks like a sealed secrets file with a damaged
//                             header (magic ...)"
//   a folder                 "<path>: is a folder, not a secrets file"
//
// The obfuscated model's weights file records that its secrets are sealed: metadata
// kSealedMark = "true" (written by protect through mark_secrets_sealed). read_secrets_for_model
// then refuses an unsealed secrets file even when no key was given.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/models/zoo.h"

namespace nns::splitter {

inline constexpr const char* kSecretsFormat = "nnsplitter-secrets-1";
inline constexpr const char* kSealedFormat = "nnsplitter-sealed-secrets-1";
inline constexpr const char* kSealMagic = "NNSSEAL1";  // 8 bytes, no terminator in the file
inline constexpr size_t kKeyBytes = 32;
// Weights-file metadata key set to "true" when the model's secrets were sealed.
inline constexpr const char* kSealedMark = "nnsplitter.secrets_sealed";

// Sorted flat indexes into the tensor `key` and the original values there.
struct SecretTensor {
  std::string key;
  std::vector<int64_t> index;
  std::vector<float> original;
};

struct Secrets {
  std::vector<SecretTensor> tensors;
  // fingerprint (of the OBFUSCATED model), original_fingerprint, arch, c, eps, total, counts,
  // clamp, ...; free-form extras allowed.
  std::map<std::string, std::string> metadata;
  int64_t total() const;
};

// SHA-256 hex over the model's whole state dict (encoding above). Stable across runs and
// devices (CUDA tensors are copied to the host).
std::string fingerprint(models::Model& m);

// THE way secrets are made (protect included): every element of every state entry that
// differs bitwise between the two models (same architecture and state keys/shapes/dtypes, else
// std::runtime_error). F32 entries only: a difference in an I64 buffer is an error. Metadata:
// fingerprint (of `obfuscated`), original_fingerprint, arch, format, total, counts; callers ADD
// their own keys (c, eps, ...) to it rather than replace it.
Secrets diff_secrets(models::Model& original, models::Model& obfuscated);

// Records in an obfuscated model's weights metadata that its secrets are sealed (protect calls
// it before saving the obfuscated model when it seals); secrets_marked_sealed reads it back.
void mark_secrets_sealed(std::map<std::string, std::string>& weights_metadata);
bool secrets_marked_sealed(const std::map<std::string, std::string>& weights_metadata);

// Checks the structure of secrets on their own: metadata has a fingerprint and an
// original_fingerprint (64 lower-case hex digits each), keys are unique and
// non-empty, index and original have the same length, indexes are non-negative and strictly
// ascending (sorted, no duplicates), originals are finite. Throws std::runtime_error starting
// with `what` + ": ".
void validate_secrets(const Secrets& s, const std::string& what);

// Writes the secrets file (format above); key (32 bytes) given → sealed. Atomic, mode 0600.
void write_secrets(const std::string& path, const Secrets& s,
                   const std::vector<uint8_t>* key = nullptr);
// The file's bytes as write_secrets would write them (a fresh nonce each time when sealed).
std::string serialize_secrets(const Secrets& s, const std::vector<uint8_t>* key = nullptr);

// Reads and validates (validate_secrets, dtypes I64/F32, 1-d, pairs complete, no stray tensors,
// format, total and counts). A sealed file needs the key; an unsealed file is refused when a key
// is given or require_sealed is set. When expected_fingerprint is not empty, a file whose
// (public) fingerprint differs is refused before anything is decrypted.
Secrets read_secrets(const std::string& path, const std::vector<uint8_t>* key = nullptr,
                     const std::string& expected_fingerprint = "", bool require_sealed = false);
Secrets parse_secrets(const std::string& bytes, const std::string& name_for_errors,
                      const std::vector<uint8_t>* key = nullptr,
                      const std::string& expected_fingerprint = "", bool require_sealed = false);

// What restore, infer and attack do with --secrets and --key: reads the key file (when key_path
// is not empty), then the secrets of the obfuscated model `m` loaded from `weights_path` (whose
// metadata is `weights_metadata`): its fingerprint must match, a sealed mark requires a sealed
// file, and verify_secrets_for_model must pass. Nothing is changed; throws std::runtime_error.
Secrets read_secrets_for_model(const std::string& secrets_path, const std::string& key_path,
                               models::Model& m, const std::string& weights_path,
                               const std::map<std::string, std::string>& weights_metadata);

// What can be learnt of a secrets file without a key.
struct SecretsFileInfo {
  bool sealed = false;
  std::string fingerprint;  // the public fingerprint (sealed) or the metadata one (unsealed)
};
SecretsFileInfo peek_secrets(const std::string& path);

// Everything apply_secrets checks before writing, except original_fingerprint: validate_secrets,
// the model's fingerprint equals s.metadata["fingerprint"], keys exist, are F32, indexes are in
// range. Throws std::runtime_error.
void check_secrets_for_model(models::Model& m, const Secrets& s);
// check_secrets_for_model, then that the model restored with `s` would have the fingerprint
// original_fingerprint (computed without changing the model).
void verify_secrets_for_model(models::Model& m, const Secrets& s);

// Restores in place, bit-exact. Before touching the model it runs verify_secrets_for_model:
// the model's fingerprint equals s.metadata["fingerprint"] (else "secrets belong to model
// <fp1>, this model is <fp2>"), validate_secrets, every key exists and is F32, every
// index < numel, and the restored model's fingerprint will equal original_fingerprint (else
// "restoring would give a model with fingerprint ..."). Writes on the model's device
// (ops::scatter on CUDA). Returns the number of entries written.
int64_t apply_secrets(models::Model& obfuscated, const Secrets& s);

// A key file: exactly 32 bytes, else a clear error. Warns on stderr when the file is readable
// by group or others.
std::vector<uint8_t> read_key(const std::string& path);
// The same check on a key file's bytes (read_key calls it); name_for_errors prefixes errors.
std::vector<uint8_t> parse_key(const std::string& bytes, const std::string& name_for_errors);
// 32 random bytes (randombytes_buf) into a new file of mode 0600; refuses to overwrite an
// existing file (std::runtime_error).
void write_new_key(const std::string& path);

}  // namespace nns::splitter
