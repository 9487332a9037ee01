#!/usr/bin/env python3
"""Restore an obfuscated model from its NNSplitter secrets with numpy alone (SPEC.md §5).

    apply_secrets.py OBF.safetensors SECRETS.safetensors OUT.safetensors

OUT gets every tensor of OBF (same order, same metadata) with the secret entries written back:
bit for bit the original weights. Only unsealed secrets files are read; a sealed one (written
with `nnsplitter protect --key`) must go through `nnsplitter restore --key KEY`.

Secrets file: safetensors with "<key>.index" (I64 [n], strictly ascending flat indexes into the
tensor <key>) and "<key>.original" (F32 [n]) per obfuscated tensor, and metadata with
format = "nnsplitter-secrets-1", fingerprint (of the obfuscated model) and original_fingerprint
(of the model once restored; both required). Everything is checked before OUT is written: pairs
complete, dtypes I64/F32, 1-d, same lengths, sorted, no duplicates, indexes in range, the target
tensors exist and are F32, original values finite, OBF's fingerprint (the same SHA-256 encoding
as nnsplitter, core/splitter/secrets.h) equals the secrets' fingerprint, and the restored model's
equals original_fingerprint: tampered or damaged secrets restore nothing. OUT must not be OBF or
SECRETS. (--verify-fingerprint is accepted for old scripts; the check is always made.)

As a module:  fingerprint(tensors), load_secrets(path), apply(tensors, secrets),
              make_secrets(original, obfuscated, metadata) and save_secrets(path, secrets).
Exit codes: 0 success, 1 failure (message on stderr, OUT untouched), 2 usage error.
"""
import argparse
import hashlib
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from safetensors_np import load_file, save_file  # noqa: E402

SECRETS_FORMAT = "nnsplitter-secrets-1"
SEAL_MAGIC = b"NNSSEAL1"
FINGERPRINT_PREFIX = b"nnsplitter-fingerprint-1\n"


class SecretsError(ValueError):
    pass


class UsageError(ValueError):
    pass


def _u64(v):
    return struct.pack("<Q", v)


def _model_array(key, arr):
    """The array as nnsplitter holds it in memory after loading the file: floating point as F32
    (F16/BF16 are converted on load), num_batches_tracked as I64."""
    arr = np.asarray(arr)
    if key.endswith("num_batches_tracked"):
        return arr.astype("<i8")
    if arr.dtype.kind == "f":
        return arr.astype("<f4")
    if arr.dtype == np.int64:
        return arr.astype("<i8")
    raise SecretsError(f"tensor '{key}' has dtype {arr.dtype}, which a model does not hold")


def fingerprint(tensors):
    """SHA-256 hex of a state dict, exactly as nnsplitter's fingerprint():
    b"nnsplitter-fingerprint-1\\n", then per entry in byte-wise ascending key order:
    u64le(len(key)) key, u64le(len(dtype)) dtype ("F32"/"I64"), u64le(ndim), ndim x i64le(dim),
    u64le(nbytes), raw little-endian bytes."""
    h = hashlib.sha256()
    h.update(FINGERPRINT_PREFIX)
    for key in sorted(tensors, key=lambda k: k.encode("utf-8")):
        arr = _model_array(key, tensors[key])
        kb = key.encode("utf-8")
        dt = b"F32" if arr.dtype == np.dtype("<f4") else b"I64"
        raw = np.ascontiguousarray(arr).tobytes()
        h.update(_u64(len(kb)) + kb + _u64(len(dt)) + dt + _u64(arr.ndim))
        for d in arr.shape:
            h.update(struct.pack("<q", d))
        h.update(_u64(len(raw)))
        h.update(raw)
    return h.hexdigest()


def _raw_header(path):
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SecretsError(f"{path}: file too short ({len(head)} bytes)")
        if head == SEAL_MAGIC:
            raise SecretsError(f"{path}: secrets file is sealed: use nnsplitter restore --key KEY")
        rest = f.read(24)
        if (sum(a != b for a, b in zip(head, SEAL_MAGIC)) <= 3
                or rest[8:24] == b'{"fingerprint":"'):
            raise SecretsError(f"{path}: this looks like a sealed secrets file with a damaged "
                               "header: the file was corrupted or tampered with")
        f.seek(8)
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise SecretsError(f"{path}: header length {n} is implausible")
        return json.loads(f.read(n).decode("utf-8"))


def _tensor_order(path):
    """Tensor names of a safetensors file in data order (the state-dict order for nnsplitter)."""
    header = _raw_header(path)
    names = [k for k in header if k != "__metadata__"]
    return sorted(names, key=lambda k: header[k]["data_offsets"][0])


def _is_hex64(s):
    return isinstance(s, str) and len(s) == 64 and all(c in "0123456789abcdef" for c in s)


def validate(secrets, metadata, what):
    """Structure checks of {key: (index, original)} on their own."""
    if not _is_hex64(metadata.get("fingerprint")):
        raise SecretsError(f"{what}: metadata lacks a fingerprint of 64 lower-case hex digits")
    if "original_fingerprint" not in metadata:
        raise SecretsError(f"{what}: secrets metadata has no original_fingerprint (the fingerprint "
                           "of the model once restored), so a restoration could not be verified; "
                           "secrets written by an older nnsplitter protect lack it: re-create "
                           "them with this version")
    if not _is_hex64(metadata["original_fingerprint"]):
        raise SecretsError(f"{what}: original_fingerprint is not 64 lower-case hex digits")
    for key, (idx, orig) in secrets.items():
        if idx.ndim != 1 or orig.ndim != 1:
            raise SecretsError(f"{what}: '{key}' index/original must be 1-d")
        if len(idx) != len(orig):
            raise SecretsError(f"{what}: '{key}' has {len(idx)} indexes but {len(orig)} original "
                               "values (lengths must match)")
        if len(idx) and idx[0] < 0:
            raise SecretsError(f"{what}: '{key}' index {idx[0]} is negative")
        if len(idx) > 1:
            d = np.diff(idx)
            if (d == 0).any():
                p = int(np.argmax(d == 0)) + 1
                raise SecretsError(f"{what}: '{key}' has duplicate index {idx[p]} at position {p}")
            if (d < 0).any():
                p = int(np.argmax(d < 0)) + 1
                raise SecretsError(f"{what}: '{key}' indexes are not sorted: {idx[p]} at position "
                                   f"{p} follows {idx[p - 1]}")
        if not np.isfinite(orig).all():
            raise SecretsError(f"{what}: '{key}' has a non-finite original value")


def load_secrets(path):
    """Returns ({key: (index int64 array, original float32 array)} in file order, metadata)."""
    header = _raw_header(path)
    tensors, meta = load_file(path)
    fmt = meta.get("format")
    if fmt != SECRETS_FORMAT:
        extra = " (this is a weights file)" if fmt == "nnsplitter-weights-1" else ""
        raise SecretsError(f"{path}: not a secrets file: format {fmt!r}, expected "
                           f"{SECRETS_FORMAT!r}{extra}")
    parts = {}
    for name in _tensor_order(path):
        dt = header[name]["dtype"]
        if name.endswith(".index"):
            key, kind, want = name[:-6], 0, "I64"
        elif name.endswith(".original"):
            key, kind, want = name[:-9], 1, "F32"
        else:
            raise SecretsError(f"{path}: unexpected tensor '{name}' (a secrets file holds "
                               "<key>.index and <key>.original pairs)")
        if dt != want:
            raise SecretsError(f"{path}: '{name}' has dtype {dt}, expected {want}")
        parts.setdefault(key, [None, None])[kind] = tensors[name]
    secrets = {}
    for key, (idx, orig) in parts.items():
        if idx is None:
            raise SecretsError(f"{path}: '{key}.original' has no matching '{key}.index'")
        if orig is None:
            raise SecretsError(f"{path}: '{key}.index' has no matching '{key}.original'")
        secrets[key] = (idx.astype(np.int64), orig.astype(np.float32))
    validate(secrets, meta, path)
    total = sum(len(i) for i, _ in secrets.values())
    if "total" in meta and meta["total"] != str(total):
        raise SecretsError(f"{path}: metadata total = {meta['total']!r} but the file holds {total} "
                           "secret entries")
    if "counts" in meta:
        want = {k: len(i) for k, (i, _) in secrets.items() if len(i)}
        counts = json.loads(meta["counts"])
        if isinstance(counts, dict) and counts != want:
            raise SecretsError(f"{path}: metadata counts disagree with the tensors in the file")
    return secrets, meta


def apply(tensors, secrets):
    """A new dict with the original values written in; checks keys, dtypes and ranges first."""
    for key, (idx, _) in secrets.items():
        if key not in tensors:
            raise SecretsError(f"secrets name '{key}', which the model does not have")
        t = tensors[key]
        if t.dtype != np.float32:
            raise SecretsError(f"secrets for '{key}', a {t.dtype} tensor: only float32 tensors "
                               "hold secrets")
        if len(idx) and idx[-1] >= t.size:
            raise SecretsError(f"secrets index {idx[-1]} of '{key}' is out of range: the tensor has "
                               f"{t.size} elements {list(t.shape)}")
    out = dict(tensors)
    for key, (idx, orig) in secrets.items():
        flat = np.array(tensors[key], dtype=np.float32, copy=True).reshape(-1)
        flat.view(np.uint32)[idx] = orig.view(np.uint32)  # bit patterns, -0.0 and all
        out[key] = flat.reshape(tensors[key].shape)
    return out


def make_secrets(original, obfuscated, metadata=None):
    """Secrets of every bitwise difference between two state dicts (as nnsplitter's
    diff_secrets): returns ({key: (index, original)}, metadata with fingerprints)."""
    secrets = {}
    for key, o in original.items():
        b = obfuscated[key]
        if o.shape != b.shape:
            raise SecretsError(f"'{key}' has shape {list(o.shape)} vs {list(b.shape)}")
        if o.dtype != np.float32:
            if not np.array_equal(o, b):
                raise SecretsError(f"'{key}' ({o.dtype}) differs: only float32 tensors hold secrets")
            continue
        ob = np.ascontiguousarray(o, dtype="<f4").reshape(-1)
        diff = np.nonzero(ob.view(np.uint32) != np.ascontiguousarray(b, dtype="<f4").reshape(-1).view(np.uint32))[0]
        if len(diff):
            secrets[key] = (diff.astype(np.int64), ob[diff].copy())
    meta = dict(metadata or {})
    meta["fingerprint"] = fingerprint(obfuscated)
    meta["original_fingerprint"] = fingerprint(original)
    return secrets, meta


def save_secrets(path, secrets, metadata):
    validate(secrets, metadata, path)
    tensors = {}
    for key, (idx, orig) in secrets.items():
        if len(idx):
            tensors[key + ".index"] = np.asarray(idx, dtype=np.int64)
            tensors[key + ".original"] = np.asarray(orig, dtype=np.float32)
    meta = dict(metadata)
    meta["format"] = SECRETS_FORMAT
    meta["total"] = str(sum(len(i) for i, _ in secrets.values()))
    meta["counts"] = json.dumps({k: len(i) for k, (i, _) in secrets.items() if len(i)},
                                separators=(",", ":"))
    save_file(tensors, path, metadata=meta)


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def restore(obf_path, secrets_path, out_path):
    """Returns the number of restored entries. Nothing is written on failure: both fingerprints
    are checked before OUT is touched."""
    for name, path in (("OBF", obf_path), ("SECRETS", secrets_path)):
        if _same_file(out_path, path):
            raise UsageError(f"OUT {out_path} is the same file as {name} {path}: refusing to "
                             "write over an input")
    secrets, smeta = load_secrets(secrets_path)
    tensors, meta = load_file(obf_path)
    order = _tensor_order(obf_path)
    have = fingerprint(tensors)
    if have != smeta["fingerprint"]:
        raise SecretsError(f"{secrets_path}: secrets belong to model {smeta['fingerprint']}, "
                           f"{obf_path} is {have}")
    restored = apply(tensors, secrets)
    got = fingerprint(restored)
    if got != smeta["original_fingerprint"]:
        raise SecretsError(f"{secrets_path}: restoring would give a model with fingerprint {got}, "
                           f"but the secrets record {smeta['original_fingerprint']} for the "
                           "original model (tampered or corrupt secrets); nothing was written")
    save_file({k: restored[k] for k in order}, out_path, metadata=meta)
    return sum(len(i) for i, _ in secrets.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("obfuscated", help="obfuscated weights (.safetensors)")
    ap.add_argument("secrets", help="unsealed secrets file")
    ap.add_argument("out", help="restored weights to write")
    ap.add_argument("--verify-fingerprint", action="store_true",
                    help="accepted for old scripts: both fingerprints are always checked")
    args = ap.parse_args(argv)
    try:
        n = restore(args.obfuscated, args.secrets, args.out)
    except UsageError as e:
        print(f"apply_secrets.py: error: {e}", file=sys.stderr)
        return 2
    except (SecretsError, ValueError, OSError, KeyError) as e:
        print(f"apply_secrets.py: error: {e}", file=sys.stderr)
        return 1
    print(f"restored {n} weight(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
