#!/usr/bin/python3
"""Convert a safetensors weights file back to a PyTorch state_dict (.pt).

    /usr/bin/python3 tools/safetensors_to_torch.py IN.safetensors OUT.pt

OUT holds an OrderedDict name -> torch tensor in the file's order, loadable with
model.load_state_dict(torch.load(OUT)). Dtypes are kept (F32 -> float32, I64 -> int64,
I32 -> int32, U8 -> uint8, F16 -> float16, F64 -> float64); BF16 comes back as float32. The
metadata is printed, not stored. Exit status 2 for a missing, malformed or unconvertible file.
Use /usr/bin/python3 (Debian's python3-torch).
"""
import argparse
import os
import sys
import tempfile
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import SafetensorsError, load_file  # noqa: E402


class ConversionError(Exception):
    pass


def to_state_dict(tensors, path):
    import numpy as np
    import torch

    sd = OrderedDict()
    for name, arr in tensors.items():
        try:
            sd[name] = torch.from_numpy(np.array(arr, copy=True))
        except TypeError as e:
            raise ConversionError(f"{path}: tensor '{name}' of dtype {arr.dtype} has no torch equivalent: {e}") from e
    return sd


def convert(src, dst):
    """Returns (state_dict, metadata)."""
    import torch

    if not os.path.exists(src):
        raise ConversionError(f"{src}: file not found")
    try:
        tensors, metadata = load_file(src)
    except SafetensorsError as e:
        raise ConversionError(str(e)) from e
    except (KeyError, TypeError, ValueError) as e:  # header entries of the wrong shape
        raise ConversionError(f"{src}: malformed safetensors header ({type(e).__name__}: {e})") from e
    except OSError as e:
        raise ConversionError(f"{src}: cannot read: {e.strerror or e}") from e
    sd = to_state_dict(tensors, src)

    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise ConversionError(f"{dst}: folder '{folder}' does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(sd, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return sd, metadata


def main(argv=None):
    ap = argparse.ArgumentParser(description="Convert a safetensors file to a PyTorch state_dict.")
    ap.add_argument("input", help="IN.safetensors")
    ap.add_argument("output", help="OUT.pt")
    args = ap.parse_args(argv)
    try:
        sd, metadata = convert(args.input, args.output)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {args.output}: cannot write: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {len(sd)} tensors")
    for k, v in metadata.items():
        print(f"# {k} = {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
