#!/usr/bin/python3
"""Convert a PyTorch checkpoint (.pt / .pth) to a safetensors weights file for nnsplitter.

    /usr/bin/python3 tools/torch_to_safetensors.py IN.pt OUT.safetensors \\
        [--arch NAME] [--dataset NAME] [--meta key=value ...] [--unsafe-load]

IN may hold a state_dict, or a checkpoint dict with the state_dict under "state_dict",
"model_state_dict" or "model" (other entries such as "epoch" or "optimizer" are ignored). A
"module." prefix on every key (nn.DataParallel / DistributedDataParallel) is stripped. Tensors
keep the state_dict order. float32 stays F32 and int64 stays I64 (BatchNorm's
num_batches_tracked); float64, float16 and bfloat16 are converted to F32 (with a note on
stderr); int32 and uint8 are kept (I32, U8). Any other dtype is an error.

The metadata records arch, dataset, the source file name, the torch version and every
--meta key=value (which may override the others).

The file is read with torch.load(weights_only=True), which refuses arbitrary pickled objects.
torch 1.13's safe loader also refuses some harmless checkpoints (floats such as "best_acc",
optimizer state, pickled whole models); if you trust the file, --unsafe-load reads it with the
full unpickler (which can run code from the file).

Exit status: 0 on success, 2 on a usage error, a missing or unreadable file, or an object that
is not a state_dict. Use /usr/bin/python3 (Debian's python3-torch).
"""
import argparse
import inspect
import os
import pickle
import sys
from collections import OrderedDict
from collections.abc import Mapping

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import SafetensorsError, save_file  # noqa: E402

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")


class ConversionError(Exception):
    """A problem with the input or output; main() prints it and exits with status 2."""


def _note(msg):
    print(f"note: {msg}", file=sys.stderr)


def load_checkpoint(path, unsafe_load=False):
    """torch.load on the CPU, with clear errors."""
    import torch

    if not os.path.exists(path):
        raise ConversionError(f"{path}: file not found")
    if os.path.isdir(path):
        raise ConversionError(f"{path}: is a directory, not a checkpoint file")
    kwargs = {"map_location": "cpu"}
    safe = not unsafe_load and "weights_only" in inspect.signature(torch.load).parameters
    if safe:
        kwargs["weights_only"] = True
    try:
        return torch.load(path, **kwargs)
    except pickle.UnpicklingError as e:
        if safe:
            first = str(e).strip() or type(e).__name__
            if "WeightsUnpickler error: " in first:  # torch's message is long; keep its reason
                first = first.split("WeightsUnpickler error: ", 1)[1]
            raise ConversionError(
                f"{path}: the safe loader (torch.load weights_only=True) refused this file ({first}); "
                "if you trust it, rerun with --unsafe-load") from e
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint: {e}") from e
    except (AttributeError, ModuleNotFoundError) as e:
        raise ConversionError(
            f"{path}: cannot unpickle ({e}); a pickled whole model needs its class importable: "
            "save model.state_dict() instead") from e
    except OSError as e:
        raise ConversionError(f"{path}: cannot read: {e.strerror or e}") from e
    except Exception as e:  # torch raises many kinds for non-checkpoint bytes
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e


def _is_tensor_mapping(obj):
    import torch

    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()))


def extract_state_dict(obj, path):
    """Returns (state_dict as an OrderedDict, where it was found)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return OrderedDict(obj.state_dict()), "a pickled nn.Module"
    if _is_tensor_mapping(obj):
        return OrderedDict(obj), "a state_dict"
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            if key in obj:
                inner = obj[key]
                if isinstance(inner, torch.nn.Module):
                    return OrderedDict(inner.state_dict()), f"checkpoint['{key}'] (an nn.Module)"
                if _is_tensor_mapping(inner):
                    return OrderedDict(inner), f"checkpoint['{key}']"
        if len(obj) == 0:
            raise ConversionError(f"{path}: not a state_dict: the file holds an empty dict")
        bad = [repr(k) for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v))]
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise ConversionError(
            f"{path}: not a state_dict: the dict's entries {shown} are not tensors, and no "
            f"{', '.join(repr(k) for k in CHECKPOINT_KEYS)} entry holds a state_dict")
    raise ConversionError(f"{path}: not a state_dict: the file holds a {type(obj).__module__}."
                          f"{type(obj).__qualname__}")


def strip_prefix(sd, prefix="module."):
    """Strips a DataParallel prefix when every key has it (repeatedly, for nested wrappers)."""
    stripped = 0
    while sd and all(k.startswith(prefix) for k in sd):
        sd = OrderedDict((k[len(prefix):], v) for k, v in sd.items())
        stripped += 1
    return sd, stripped


def to_numpy(sd, path):
    """OrderedDict name -> numpy array in the dtypes nnsplitter reads."""
    import torch

    keep = {torch.float32: "F32", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}
    to_f32 = (torch.float64, torch.float16, torch.bfloat16)
    out = OrderedDict()
    for name, t in sd.items():
        if t.is_sparse or t.layout != torch.strided:
            raise ConversionError(f"{path}: tensor '{name}' has layout {t.layout}; only dense tensors can be converted")
        if t.is_quantized:
            raise ConversionError(f"{path}: tensor '{name}' is quantized ({t.dtype}); dequantize it first")
        t = t.detach().cpu()
        if t.dtype in keep:
            arr = t.contiguous().numpy()
        elif t.dtype in to_f32:
            _note(f"tensor '{name}' {str(t.dtype).replace('torch.', '')} converted to F32")
            arr = t.to(torch.float32).contiguous().numpy()
        else:
            raise ConversionError(
                f"{path}: tensor '{name}' has dtype {t.dtype}, which nnsplitter cannot read "
                "(float32/64/16, bfloat16, int64, int32, uint8 are converted)")
        out[name] = arr
    return out


# dataset name -> (channels, image size, classes)
DATASET_GEOMETRY = {
    "fashion-mnist": (1, 28, 10),
    "mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
}


def parse_meta(items):
    meta = OrderedDict()
    for item in items or []:
        if "=" not in item:
            raise ConversionError(f"--meta '{item}': expected key=value")
        k, v = item.split("=", 1)
        if not k:
            raise ConversionError(f"--meta '{item}': empty key")
        meta[k] = v
    return meta


def convert(src, dst, arch=None, dataset=None, meta_items=(), unsafe_load=False):
    """Converts src to dst; returns (number of tensors, metadata written)."""
    import torch

    extra = parse_meta(meta_items)
    obj = load_checkpoint(src, unsafe_load)
    sd, where = extract_state_dict(obj, src)
    if where != "a state_dict":
        _note(f"using the state_dict in {where}")
    sd, stripped = strip_prefix(sd)
    if stripped:
        _note(f"stripped the 'module.' prefix from every key ({stripped}x)")
    arrays = to_numpy(sd, src)

    metadata = OrderedDict()
    if arch:
        metadata["arch"] = arch
    if dataset:
        metadata["dataset"] = dataset
    # The model geometry nnsplitter needs to rebuild the network (in_channels, input_size,
    # num_classes), derived from the dataset; --meta can override any of it.
    geo = DATASET_GEOMETRY.get((dataset or "").replace("_", "-"))
    if geo is not None:
        ch, size, classes = geo
        if arch and arch.startswith("vgg") and size < 32:
            size = 32  # VGG's five max-pools need 32x32: 28x28 data is zero-padded
        metadata["in_channels"] = str(ch)
        metadata["input_size"] = str(size)
        metadata["num_classes"] = str(classes)
        metadata["width_mult"] = "1"
    metadata["source"] = os.path.basename(src)
    metadata["format"] = "pt"
    metadata["torch_version"] = str(torch.__version__)
    metadata["converted_by"] = "tools/torch_to_safetensors.py"
    metadata.update(extra)

    folder = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(folder):
        raise ConversionError(f"{dst}: folder '{folder}' does not exist")
    try:
        save_file(arrays, dst, metadata=metadata)
    except SafetensorsError as e:
        raise ConversionError(f"{dst}: {e}") from e
    except OSError as e:
        raise ConversionError(f"{dst}: cannot write: {e.strerror or e}") from e
    return len(arrays), metadata


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Convert a PyTorch state_dict / checkpoint to safetensors for nnsplitter.")
    ap.add_argument("input", help="IN.pt / IN.pth")
    ap.add_argument("output", help="OUT.safetensors")
    ap.add_argument("--arch", help="architecture name recorded in the metadata (e.g. lenet5, resnet20)")
    ap.add_argument("--dataset", help="dataset the model was trained on (fashion-mnist, mnist, cifar10, cifar100): "
                         "sets in_channels, input_size and num_classes in the metadata")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="extra metadata entry (repeatable)")
    ap.add_argument("--unsafe-load", action="store_true",
                    help="read the checkpoint with the full unpickler (only for trusted files)")
    args = ap.parse_args(argv)
    try:
        n, metadata = convert(args.input, args.output, args.arch, args.dataset, args.meta,
                              args.unsafe_load)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {n} tensors; metadata "
          + ", ".join(f"{k}={v}" for k, v in metadata.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
