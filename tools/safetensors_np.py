#!/usr/bin/env python3
"""Read and write safetensors files with json + numpy only (Debian has no python3-safetensors).

    from safetensors_np import load_file, save_file
    tensors, metadata = load_file("model.safetensors")    # dict[str, np.ndarray], dict[str, str]
    save_file(tensors, "out.safetensors", metadata={"arch": "lenet5"})

Format: 8-byte little-endian header length N, N bytes of JSON (padded with spaces so that 8+N is
a multiple of 8), then raw little-endian tensor data; offsets are relative to the end of the
header. Reads F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL; BF16 is returned as float32.
"""
import json
import os
import struct
import sys
import tempfile

import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
    pass


def load_file(path):
    """Returns (tensors, metadata). Validates header bounds, offsets and sizes."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise SafetensorsError(f"{path}: file too short for a safetensors header ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise SafetensorsError(f"{path}: header length {n} exceeds file size {len(data)}")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON: {e}") from e
    metadata = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n:]
    tensors = {}
    spans = []
    for name, info in header.items():
        dt = info["dtype"]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        if dt == "BF16":
            itemsize = 2
        elif dt in _DTYPES:
            itemsize = _DTYPES[dt].itemsize
        else:
            raise SafetensorsError(f"{path}: tensor '{name}' has unsupported dtype {dt}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= begin <= end <= len(body)):
            raise SafetensorsError(f"{path}: tensor '{name}' offsets [{begin}, {end}] outside data of {len(body)} bytes")
        if end - begin != count * itemsize:
            raise SafetensorsError(f"{path}: tensor '{name}' has {end - begin} bytes, shape {list(shape)} {dt} needs {count * itemsize}")
        spans.append((begin, end, name))
        raw = bytes(body[begin:end])
        if dt == "BF16":
            u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_DTYPES[dt]).copy()
        tensors[name] = arr.reshape(shape)
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise SafetensorsError(f"{path}: tensor '{name}' starts at {begin}, expected {pos} (gap or overlap)")
        pos = end
    if pos != len(body):
        raise SafetensorsError(f"{path}: {len(body) - pos} trailing bytes after the last tensor")
    return tensors, metadata


def save_file(tensors, path, metadata=None):
    """Writes tensors (dict name -> np.ndarray, insertion order kept) atomically."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        key = _NAMES.get(np.dtype(dt).newbyteorder("<") if dt.itemsize > 1 else dt)
        if key is None:
            raise SafetensorsError(f"tensor '{name}': dtype {arr.dtype} not supported")
        raw = np.ascontiguousarray(arr, dtype=_DTYPES[key]).tobytes()
        header[name] = {"dtype": key, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - (8 + len(hjson)) % 8) % 8)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(hjson)))
            f.write(hjson)
            for b in blobs:
                f.write(b)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


if __name__ == "__main__":
    # Usage: safetensors_np.py FILE   -> prints every tensor's dtype and shape, and the metadata.
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    t, m = load_file(sys.argv[1])
    for k, v in t.items():
        print(f"{k}\t{v.dtype}\t{list(v.shape)}")
    for k, v in m.items():
        print(f"# {k} = {v}")
