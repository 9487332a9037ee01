#!/usr/bin/python3
"""The PyTorch side of tools/bench_compare.sh: one process, one model, one JSON document.

    /usr/bin/python3 tools/bench_pytorch.py throughput --weights W.safetensors --data-dir DIR \\
        [--threads 2] [--batch 128] [--data-batches 4] [--min-time 3] [--layouts nchw,channels_last]
    /usr/bin/python3 tools/bench_pytorch.py search --weights W.safetensors --data-dir DIR \\
        [--updates 3] [--episodes 3] [--steps 200] [--eval-every 100] [--val-size 2000]

throughput: the workloads of `nnsplitter bench --images real` on the same inputs (the first
--data-batches batches of the training set in file order, cycled through):
  * inference: model.eval(), torch.no_grad(), one forward;
  * training:  model.train(), forward + cross-entropy + backward + SGD (lr 0.01, momentum 0.9,
               weight decay 5e-4), as nnsplitter's optim::SGD;
  * obfuscation step, the authors' way (splitter_torch.Obfuscator): model.eval(), full backward
    of -CE, gradients masked, Adam (lr 0.05) over the eligible weights, clamp. The mask is
    bench's: filter 0 of every eligible layer, |w - c| < eps with c = mean of the eligible
    weights and eps = 1% of their range; the CE of the first --trace-steps steps is recorded.
Each workload is timed in every layout of --layouts (NCHW, channels_last), the best reported.
search: splitter_torch.search with the budget given, timed (search_seconds: the loop alone).
Without a mode (the GPU scripts' form: [--device cuda] [--only MODEL ...] [--json]): freshly
initialised models on random inputs, tools/bench_pytorch_zoo.py.

Fair settings, applied before torch is loaded (the process re-executes itself when needed):
glibc keeps freed buffers (MALLOC_MMAP_THRESHOLD_=33554432, MALLOC_TRIM_THRESHOLD_=1073741824;
without them every activation buffer goes back to the kernel after each pass and PyTorch runs
4-5x slower from page faults) and OMP_NUM_THREADS = --threads, with torch.set_num_threads.
--no-malloc-tuning runs with glibc's defaults instead. Use /usr/bin/python3 (Debian's torch).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

FAIR_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["throughput", "search"])
    ap.add_argument("--weights", required=True, help="nnsplitter safetensors (trained victim)")
    ap.add_argument("--dataset", default=None, help="default: the weights' metadata")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data-batches", type=int, default=4)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--trace-steps", type=int, default=10)
    ap.add_argument("--layouts", default="nchw,channels_last")
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--target-per-layer", type=float, default=15.0)
    ap.add_argument("--lr", type=float, default=0.1, help="obfuscation Adam lr (search)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-malloc-tuning", action="store_true")
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args(argv)
    for name in ("threads", "batch", "data_batches", "min_iters", "updates", "episodes", "steps", "eval_every",
                 "val_size"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return a


def _reexec_with_fair_env(a):
    want = {} if a.no_malloc_tuning else dict(FAIR_MALLOC)
    want["OMP_NUM_THREADS"] = str(a.threads)
    if any(os.environ.get(k) != v for k, v in want.items()) and "torch" not in sys.modules:
        os.environ.update(want)
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:])


ZOO = __name__ == "__main__" and (not sys.argv[1:] or sys.argv[1] not in ("throughput", "search", "-h", "--help"))
if ZOO:   # the zoo mode, under the same fair glibc setting
    if "--no-malloc-tuning" not in sys.argv and any(os.environ.get(k) != v for k, v in FAIR_MALLOC.items()):
        os.environ.update(FAIR_MALLOC)
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_pytorch_zoo  # noqa: E402
    sys.exit(bench_pytorch_zoo.main([x for x in sys.argv[1:] if x != "--no-malloc-tuning"]))

A = _parse(sys.argv[1:]) if __name__ == "__main__" else None
if A is not None:
    _reexec_with_fair_env(A)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import splitter_torch as st  # noqa: E402


def _time(fn, min_time, min_iters):
    """Median (wall, process CPU) seconds per call after two warm-up calls (nnsplitter bench's)."""
    fn()
    fn()
    t, c, start = [], [], time.perf_counter()
    while len(t) < min_iters or time.perf_counter() - start < min_time:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        t.append(time.perf_counter() - t0)
        c.append(time.process_time() - c0)
        if len(t) > 1000:
            break
    return statistics.median(t), statistics.median(c)


def _rate(r, name, batch, timing):
    r[f"{name}_images_per_second"] = batch / timing[0]
    r[f"{name}_cpu_seconds_per_batch"] = timing[1]


def _data(a, meta, dataset):
    (xtr, ytr), _ = st.load_dataset(dataset, a.data_dir)
    n = min(a.data_batches, len(xtr) // a.batch)
    if n < 1:
        raise SystemExit(f"bench_pytorch: {a.data_dir}: fewer than --batch {a.batch} training images")
    x = st.normalise(xtr[:n * a.batch], dataset, int(meta["input_size"]))
    y = torch.from_numpy(ytr[:n * a.batch])
    return [(x[i * a.batch:(i + 1) * a.batch], y[i * a.batch:(i + 1) * a.batch]) for i in range(n)]


def throughput(a, model, meta, dataset):
    base = {k: v.clone() for k, v in model.state_dict().items()}
    batches0 = _data(a, meta, dataset)
    res = {"model": meta["arch"], "dataset": dataset, "batch": a.batch, "data_batches": len(batches0),
           "layouts": {}}
    for layout in a.layouts.split(","):
        fmt = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}[layout]
        model.load_state_dict(base)
        model.to(memory_format=fmt)
        batches = [(x.contiguous(memory_format=fmt), y) for x, y in batches0]
        it = {"i": 0}

        def nxt():
            b = batches[it["i"] % len(batches)]
            it["i"] += 1
            return b

        model.eval()

        def infer():
            with torch.no_grad():
                model(nxt()[0])

        r = {}
        _rate(r, "inference", a.batch, _time(infer, a.min_time, a.min_iters))
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

        def train():
            x, y = nxt()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        it["i"] = 0
        _rate(r, "training", a.batch, _time(train, a.min_time, a.min_iters))
        model.load_state_dict(base)
        model.to(memory_format=fmt)
        layers = st.eligible(model)
        c, lo, hi = st.stats(layers)
        masks = st.masks_for(layers, [[0]] * len(layers), c, (hi - lo) * 0.01)
        obf = st.Obfuscator(model, layers, lo, hi, lr=0.05)
        obf.start(masks)
        trace = []

        def obfuscate():
            loss = obf.step(*nxt())
            if len(trace) < a.trace_steps:
                trace.append(loss)

        it["i"] = 0
        _rate(r, "obfuscation", a.batch, _time(obfuscate, a.min_time, a.min_iters))
        r["obfuscation_masked_weights"] = int(sum(m.sum().item() for m in masks))
        r["obfuscation_losses"] = trace
        res["layouts"][layout] = r
    for name in ("inference", "training", "obfuscation"):
        key = f"{name}_images_per_second"
        best = max(res["layouts"], key=lambda lay: res["layouts"][lay][key])
        res[key] = res["layouts"][best][key]
        res[f"{name}_layout"] = best
        # CPU time: the layout that needs least of it (on a loaded machine it may differ)
        cpu = f"{name}_cpu_seconds_per_batch"
        res[cpu] = min(res["layouts"][lay][cpu] for lay in res["layouts"])
    first = res["layouts"][a.layouts.split(",")[0]]
    res["obfuscation_masked_weights"] = first["obfuscation_masked_weights"]
    res["obfuscation_losses"] = first["obfuscation_losses"]
    return res


def search(a, model, meta, dataset):
    (xtr, ytr), (xte, yte) = st.load_dataset(dataset, a.data_dir)
    size = int(meta["input_size"])
    if a.val_size >= len(xtr):
        raise SystemExit(f"bench_pytorch: --val-size {a.val_size} must be below the {len(xtr)} training images")
    perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(a.seed)).numpy()
    val, tr = perm[:a.val_size], perm[a.val_size:]
    x_train, y_train = st.normalise(xtr[tr], dataset, size), torch.from_numpy(ytr[tr])
    x_val, y_val = st.normalise(xtr[val], dataset, size), torch.from_numpy(ytr[val])
    x_test, y_test = st.normalise(xte, dataset, size), torch.from_numpy(yte)
    original = st.accuracy(model, x_test, y_test)
    r = st.search(model, (x_train, y_train), (x_val, y_val), a.updates, a.episodes, a.steps, a.eval_every,
                  patience=10 ** 6, lr=a.lr, target=a.target_per_layer, batch=a.batch, seed=a.seed,
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    r.update({"model": meta["arch"], "dataset": dataset, "original_accuracy": original,
              "obfuscated_accuracy": st.accuracy(model, x_test, y_test),
              "updates": a.updates, "episodes_per_update": a.episodes, "steps": a.steps})
    return r


def main(a):
    t0 = time.perf_counter()
    torch.set_num_threads(a.threads)
    try:
        model, meta = st.load_model(a.weights)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"bench_pytorch: {a.weights}: {e}", file=sys.stderr)
        return 2
    dataset = a.dataset or meta.get("dataset")
    if dataset not in st.NORM:
        print(f"bench_pytorch: {a.weights}: unknown dataset '{dataset}' (give --dataset)", file=sys.stderr)
        return 2
    try:
        r = throughput(a, model, meta, dataset) if a.mode == "throughput" else search(a, model, meta, dataset)
    except FileNotFoundError as e:
        print(f"bench_pytorch: {e}", file=sys.stderr)
        return 1
    r.update({"framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
              "malloc": {k: os.environ.get(k) for k in FAIR_MALLOC},
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "wall_seconds": time.perf_counter() - t0,
              "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    text = json.dumps(r, indent=1)
    if a.out:
        with open(a.out + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(a.out + ".tmp", a.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(A))
