#!/usr/bin/python3
"""nnsplitter against PyTorch, side by side, alternating: the one comparison tool (issue 9).

    tools/bench_compare.sh [--pairs 3] [--threads 2] [--markdown] [--quick | --tiny] [--out FILE]
    tools/bench_compare.sh --from results/bench/compare-....json --markdown   # re-render only

For every pair i = 1..--pairs and every workload it runs our process, then PyTorch's (A B A B),
each in a fresh process with the same thread count, batch and data:
  * throughput, per model of --models (lenet5 and resnet20 on Fashion-MNIST with trained weights,
    resnet18 on synthetic CIFAR-shaped 3x32x32 images with initial weights): inference, training
    step (forward, cross-entropy, backward, SGD) and one obfuscation step, our
    `nnsplitter bench --images real` against tools/bench_pytorch.py throughput (best of NCHW and
    channels_last, glibc told to keep freed buffers);
  * the fixed search, per model of --search: `nnsplitter protect --config
    configs/bench/search-MODEL.yaml` against tools/bench_pytorch.py search (tools/splitter_torch.py,
    the authors' algorithm with the sign fix) on the budget read from that config.
Per workload it reports the median of each side and the median of the pair ratios (ours/PyTorch
for throughput; PyTorch/ours for times and peak memory, so > 1 always means we are ahead), the
peak memory (max RSS) of every process, and a parity check of the obfuscation step (the same
masked weights and batches must give the same loss trajectory on both sides, checked on the steps
where PyTorch's own NCHW and channels_last runs still agree: see parity()). The JSON records
the date, the machine (CPU model, cores, load average), the versions (our git commit, torch,
oneDNN and BLAS as loaded) and the threads. --markdown prints the README table.

Trained victims are looked for in --victims (default: $NNS_VICTIMS, /work/artifacts,
results/bench/victims); missing ones are trained with `nnsplitter train` into
results/bench/victims/ (cached). Exit status: 0, 1 on a failed run or a failed parity check,
2 on a usage error. Use /usr/bin/python3.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)
from safetensors_np import load_file  # noqa: E402

PY = "/usr/bin/python3"
FAIR_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
THROUGHPUT = [("training_images_per_second", "training, img/s"),
              ("inference_images_per_second", "inference, img/s"),
              ("obfuscation_images_per_second", "obfuscation step (authors' way in PyTorch), img/s")]
# The CPU-time twin of each measure (process CPU seconds, all threads): the ratio by CPU time
# measures the work where a loaded machine makes wall time measure the scheduler.
CPU_KEY = {"training_images_per_second": "training_cpu_seconds_per_batch",
           "inference_images_per_second": "inference_cpu_seconds_per_batch",
           "obfuscation_images_per_second": "obfuscation_cpu_seconds_per_batch",
           "search_seconds": "cpu_seconds", "wall_seconds": "cpu_seconds"}
VICTIM_EPOCHS = {"lenet5": 8, "resnet20": 4}
PARITY_RTOL = 2e-3
PARITY_SELF_RTOL = 1e-5   # parity(): steps checked while PyTorch agrees with itself this well
PARITY_MIN_STEPS = 3


class Failure(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- processes
def run_json(cmd, env=None):
    """Runs cmd (stdout: one JSON document); returns (document, its max RSS in MiB, wall s).
    The child is reaped with os.wait4 so that its own peak memory is known. Raises Failure."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT, text=True)
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            raise
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text, errs = out.read(), err.read()
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)} exited with {p.returncode}:\n{errs[-3000:]}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise Failure(f"{' '.join(cmd)}: output is not JSON ({e}):\n{text[-2000:]}") from e
    doc_cpu = ru.ru_utime + ru.ru_stime
    return doc, ru.ru_maxrss / 1024, (wall, doc_cpu)


PASSIVE = False   # --passive: OMP_WAIT_POLICY=PASSIVE for both sides


def our_env(isa=None):
    env = dict(os.environ)
    if PASSIVE:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if isa == "avx2":
        # Our kernels (the blocked layout becomes nChw8c) and our oneDNN convolutions.
        env["NNS_CPU_ISA"] = "avx2"
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    return env


def torch_env(threads, isa=None):
    env = dict(os.environ)
    if PASSIVE:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.update(FAIR_MALLOC)
    env["OMP_NUM_THREADS"] = str(threads)
    if isa == "avx2":
        # PyTorch's oneDNN (ATen's own kernels already say 'CPU capability AVX2' on Debian's build).
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
        env["ATEN_CPU_CAPABILITY"] = "avx2"
    return env


# ------------------------------------------------------------------------------ environment
def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        pass
    isa = "avx512f" if " avx512f" in flags else ("avx2" if " avx2" in flags else "")
    return {"cpu": model, "cores": os.cpu_count(), "isa": isa, "hostname": platform.node(),
            "os": platform.platform()}


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def our_versions(binary):
    v = {"binary": os.path.relpath(binary, ROOT) if binary.startswith(ROOT) else binary}
    try:
        v["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                     text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            v["commit"] += "+dirty"
    except (OSError, subprocess.CalledProcessError):
        v["commit"] = "unknown"
    v["version"] = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    v["blas"] = [os.path.realpath(ln.split("=>")[1].split("(")[0].strip()) for ln in ldd.splitlines()
                 if "=>" in ln and ("blas" in ln or "dnnl" in ln)]
    v["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    return v


TORCH_PROBE = r"""
import json, os, re, torch
cfg = torch.__config__.show()
maps = open('/proc/self/maps').read()
libs = sorted({os.path.realpath(l.split()[-1]) for l in maps.splitlines()
               if re.search(r'(blas|dnnl|mkldnn|gomp)[^/]*\.so', l.split()[-1] if l.split() else '')})
print(json.dumps({'torch': torch.__version__,
  'onednn': next((l.strip(' -') for l in cfg.splitlines() if 'MKL-DNN' in l or 'oneDNN' in l), None),
  'cpu_capability': next((l.split(':')[1].strip() for l in cfg.splitlines() if 'CPU capability' in l), None),
  'blas_info': next((m.group(1) for m in [re.search(r'BLAS_INFO=(\w+)', cfg)] if m), None),
  'libraries': libs}))
"""


def torch_versions():
    p = subprocess.run([PY, "-c", TORCH_PROBE], capture_output=True, text=True, env=torch_env(1))
    if p.returncode != 0:
        raise Failure(f"{PY}: cannot import torch:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout)


# ----------------------------------------------------------------------------------- inputs
def find_binary(given):
    if given:
        if not os.access(given, os.X_OK):
            raise SystemExit(f"bench_compare: --nnsplitter {given}: not an executable")
        return os.path.abspath(given)
    for cand in (os.environ.get("NNS_BINARY"), "build/nnsplitter", "build-cpu/nnsplitter", "build-dev/nnsplitter"):
        if cand and os.access(os.path.join(ROOT, cand), os.X_OK):
            return os.path.abspath(os.path.join(ROOT, cand))
    raise SystemExit("bench_compare: no nnsplitter binary in build/, build-cpu/ or build-dev/; build it or give "
                     "--nnsplitter PATH")


def weights_meta(path):
    try:
        return load_file(path)[1]
    except (OSError, ValueError):
        return {}


def find_victim(arch, dataset, dirs):
    for d in dirs:
        if not d or not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if not name.endswith(".safetensors") or "obfuscated" in name:
                continue
            m = weights_meta(p)
            if m.get("arch") == arch and m.get("dataset", "").replace("_", "-") == dataset and \
                    m.get("obfuscated") != "true" and "initialised" not in m:
                return p
    return None


def victim_dirs(a):
    return [a.victims] if a.victims else [os.environ.get("NNS_VICTIMS"), "/work/artifacts",
                                          os.path.join(a.cache, "victims")]


def trained_victim(a, arch, binary):
    found = find_victim(arch, "fashion-mnist", victim_dirs(a))
    if found:
        return found
    out = os.path.join(a.cache, "victims", f"{arch}-fashion-mnist.safetensors")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    epochs = a.victim_epochs if a.victim_epochs else VICTIM_EPOCHS.get(arch, 4)
    log(f"training the {arch} victim ({epochs} epochs) into {out} ...")
    cmd = [binary, "train", "--model", arch, "--dataset", "fashion-mnist", "--data-dir", a.data_dir,
           "--epochs", str(epochs), "--threads", str(a.threads), "--out", out]
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)} exited with {p.returncode}")
    return out


def init_weights(arch, dataset, out):
    """Freshly initialised weights (torch seed 0) of arch, as an nnsplitter safetensors file."""
    if os.path.exists(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    geo = {"fashion-mnist": (1, 28), "cifar10": (3, 32)}[dataset]
    code = ("import sys, torch, numpy as np; sys.path.insert(0, %r); import torch_models as tm; "
            "from safetensors_np import save_file; torch.manual_seed(0); "
            "m = tm.build(%r, %d, 10, %d); "
            "save_file({k: v.numpy() for k, v in m.state_dict().items()}, %r, "
            "{'arch': %r, 'dataset': %r, 'in_channels': '%d', 'input_size': '%d', 'num_classes': '10', "
            "'width_mult': '1', 'initialised': 'torch.manual_seed(0)'})") % (TOOLS, arch, geo[0], geo[1], out + ".tmp", arch, dataset, geo[0], geo[1])
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=torch_env(1))
    if p.returncode != 0:
        raise Failure(f"cannot write initial {arch} weights to {out}:\n{p.stderr[-2000:]}")
    os.replace(out + ".tmp", out)
    return out


def synthetic_cifar(folder, per_batch=512):
    """CIFAR-10 binary files (data_batch_1..5.bin, test_batch.bin) of seeded uniform noise."""
    if os.path.exists(os.path.join(folder, "test_batch.bin")):
        return folder
    import numpy as np
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.randint(0, 256, size=(per_batch, 3073)).astype(np.uint8)
        rec[:, 0] = np.arange(per_batch) % 10
        with open(os.path.join(folder, name + ".tmp"), "wb") as f:
            f.write(rec.tobytes())
        os.replace(os.path.join(folder, name + ".tmp"), os.path.join(folder, name))
    return folder


def search_budget(binary, config, sets):
    """The effective splitter:/controller: keys of a protect config (nnsplitter parses it)."""
    import yaml
    cmd = [binary, "protect", "--print-config", "--weights", "x", "--dataset", "fashion-mnist", "--out", "x",
           "--config", config] + [x for s in sets for x in ("--set", s)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)}:\n{p.stderr}")
    return yaml.safe_load(p.stdout)


# ---------------------------------------------------------------------------------- the runs
class Session:
    def __init__(self, a, binary):
        self.a, self.binary = a, binary
        self.runs = []   # every process: workload, side, pair, values, max_rss_mib, wall, loadavg

    def record(self, workload, side, pair, values, rss, times):
        rec = {"workload": workload, "side": side, "pair": pair, "max_rss_mib": rss, "wall_seconds": times[0],
               "cpu_seconds": times[1], "loadavg_after": loadavg(), **values}
        self.runs.append(rec)
        return rec

    def throughput(self, arch, weights, data_dir, pair, isa=None):
        a = self.a
        common = ["--batch", str(a.batch), "--data-batches", str(a.data_batches), "--min-time", str(a.min_time),
                  "--min-iters", str(a.min_iters), "--threads", str(a.threads), "--data-dir", data_dir]
        workload = f"{arch}/throughput" + (f"-{isa}" if isa else "")
        doc, rss, wall = run_json([self.binary, "bench", "--weights", weights, "--images", "real", "--json"] + common,
                                  env=our_env(isa))
        ours = doc["results"][0]
        self.record(workload, "nnsplitter", pair, ours, rss, wall)
        doc, rss, wall = run_json([PY, os.path.join(TOOLS, "bench_pytorch.py"), "throughput", "--weights", weights,
                                   "--layouts", a.layouts] + common, env=torch_env(a.threads, isa))
        self.record(workload, "pytorch", pair, doc, rss, wall)
        log(f"  pair {pair} {arch}{' ' + isa if isa else ''}: " + ", ".join(
            f"{k.split('_')[0]} {ours[k]:.0f} vs {doc[k]:.0f}" for k, _ in THROUGHPUT))

    def search(self, arch, weights, pair):
        a = self.a
        config = os.path.join(ROOT, "configs", "bench", f"search-{arch}.yaml")
        b = search_budget(self.binary, config, a.search_set)
        sp, ct = b["splitter"], b["controller"]
        with tempfile.TemporaryDirectory(prefix="nns-bench-protect-") as out:
            cmd = [self.binary, "protect", "--weights", weights, "--dataset", "fashion-mnist", "--data-dir",
                   a.data_dir, "--config", config, "--threads", str(a.threads), "--out", out, "--json",
                   "--seed", str(pair)] + [x for s in a.search_set for x in ("--set", s)]
            doc, rss, wall = run_json(cmd, env=our_env())
        self.record(f"{arch}/search", "nnsplitter", pair, {
            "search_seconds": doc["search_seconds"], "seconds": doc["seconds"],
            "obfuscated_accuracy": doc["obfuscated_accuracy"], "obfuscated_weights": doc["obfuscated_weights"],
            "episodes": doc["episodes"]}, rss, wall)
        ours = doc["search_seconds"]
        cmd = [PY, os.path.join(TOOLS, "bench_pytorch.py"), "search", "--weights", weights, "--data-dir", a.data_dir,
               "--threads", str(a.threads), "--batch", str(sp["batch"]), "--updates", str(ct["updates"]),
               "--episodes", str(ct["episodes_per_update"]), "--steps", str(sp["max_steps"]),
               "--eval-every", str(sp["eval_every"]), "--val-size", str(sp["val_size"]), "--lr", str(sp["lr"]),
               "--target-per-layer", str(sp["target_per_layer"]), "--seed", str(pair)]
        doc, rss, wall = run_json(cmd, env=torch_env(a.threads))
        self.record(f"{arch}/search", "pytorch", pair, doc, rss, wall)
        log(f"  pair {pair} {arch} search: {ours:.1f} s vs {doc['search_seconds']:.1f} s")


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(runs):
    """Rows: workload, unit, medians per side, median of the pair ratios (> 1: we are ahead)."""
    rows = []
    workloads = list(dict.fromkeys(r["workload"] for r in runs))

    def paired(workload, key, invert, cpu_key=None):
        by = {}
        for r in runs:
            if r["workload"] == workload and r.get(key) is not None:
                by.setdefault(r["pair"], {})[r["side"]] = (r[key], r.get(cpu_key) if cpu_key else None)
        pairs = [v for v in by.values() if "nnsplitter" in v and "pytorch" in v]
        ours = [p["nnsplitter"][0] for p in pairs]
        theirs = [p["pytorch"][0] for p in pairs]
        ratios = [(t / o) if invert else (o / t) for o, t in zip(ours, theirs) if o and t]
        # CPU seconds: less is better on both kinds of rows, so PyTorch/ours.
        cpu = [p["pytorch"][1] / p["nnsplitter"][1] for p in pairs if p["pytorch"][1] and p["nnsplitter"][1]]
        return {"nnsplitter": med(ours), "pytorch": med(theirs), "ratio": med(ratios),
                "ratio_range": [min(ratios), max(ratios)] if ratios else None, "pairs": len(pairs),
                "cpu_ratio": med(cpu) if len(cpu) == len(pairs) and cpu else None}

    for w in workloads:
        arch, kind = w.split("/")
        if kind.startswith("throughput"):
            isa = kind[len("throughput-"):] if "-" in kind else ""
            name = f"{arch} ({isa.upper()})" if isa else arch
            for key, label in THROUGHPUT:
                rows.append({"workload": f"{name} {label}", "key": key, **paired(w, key, False, CPU_KEY[key])})
            if isa:
                continue  # the memory rows are the full-ISA run's
        else:
            rows.append({"workload": f"{arch} fixed search, s (ratio: PyTorch/ours)", "key": "search_seconds",
                         **paired(w, "search_seconds", True)})
            rows.append({"workload": f"{arch} fixed search, whole process incl. loading and test evaluations, s",
                         "key": "search_seconds", **paired(w, "wall_seconds", True, "cpu_seconds")})
        rows.append({"workload": f"{arch} {kind} peak RSS, MiB (ratio: PyTorch/ours)", "key": "max_rss_mib",
                     **paired(w, "max_rss_mib", True)})
    return rows


def parity(runs):
    """Obfuscation step: same mask size and the same CE trajectory (relative PARITY_RTOL) per pair.

    Checked are the steps on which PyTorch agrees with itself: its NCHW and channels_last runs
    (same weights, same batches, other summation order) differ by at most PARITY_SELF_RTOL, and
    always the first PARITY_MIN_STEPS. Beyond that the trajectory is chaotic, not wrong: on an
    untrained resnet18 an early Adam step moves a weight by about lr * sign(grad) however small
    the gradient, so rounding that flips a near-zero gradient moves the weight the other way, and
    PyTorch's own two layouts drift apart x5-15 per step (1e-7, 2e-6, 8e-6, 1e-4, 4e-4 over
    steps 2-6, 2026-12-05). Later steps are reported, not checked."""
    out = []
    for r in runs:
        if r["side"] != "nnsplitter" or not r["workload"].endswith("/throughput"):
            continue
        t = next((x for x in runs if x["workload"] == r["workload"] and x["pair"] == r["pair"]
                  and x["side"] == "pytorch"), None)
        if t is None:
            continue
        lo, lt = r["obfuscation_losses"], t["obfuscation_losses"]
        n = min(len(lo), len(lt))
        rel = [abs(x - y) / max(abs(y), 1e-6) for x, y in zip(lo[:n], lt[:n])]
        traces = [v["obfuscation_losses"] for v in (t.get("layouts") or {}).values()]
        self_rel = None
        checked = n
        if len(traces) >= 2:
            a, b = traces[0], traces[1]
            self_rel = [abs(x - y) / max(abs(y), 1e-6) for x, y in zip(a, b)]
            stable = next((i for i, d in enumerate(self_rel) if d > PARITY_SELF_RTOL), len(self_rel))
            checked = min(n, max(stable, PARITY_MIN_STEPS))
        diff = max(rel[:checked], default=None)
        ok = (r["obfuscation_masked_weights"] == t["obfuscation_masked_weights"] and checked > 0
              and diff is not None and diff <= PARITY_RTOL)
        out.append({"workload": r["workload"], "pair": r["pair"], "steps": n, "checked_steps": checked,
                    "masked_weights": [r["obfuscation_masked_weights"], t["obfuscation_masked_weights"]],
                    "losses": {"nnsplitter": lo[:n], "pytorch": lt[:n]}, "max_rel_diff": diff,
                    "max_rel_diff_all_steps": max(rel, default=None),
                    "pytorch_layout_rel_diff": self_rel, "ok": ok})
    return out


# ---------------------------------------------------------------------------------- output
def fmt(v, key):
    if v is None:
        return "–"
    if key in ("search_seconds",):
        return f"{v:,.1f}"
    return f"{v:,.0f}"


def markdown(doc):
    m, v, t = doc["machine"], doc["versions"], doc["versions"]["torch"]
    lines = [f"Measured {doc['date']} on {m['cpu']} ({m['cores']} cores, {m['isa']}), {doc['threads']} threads, "
             f"batch {doc['batch']}, {doc.get('pairs_done', doc['pairs'])} alternating pairs; 1-min load average "
             f"{doc['loadavg_before'][0]} before, {doc['loadavg_after'][0]} after"
             + (" (machine busy: noisy)" if doc.get("busy") else "") + ".",
             f"nnsplitter {v['nnsplitter']['commit']} (BLAS {', '.join(os.path.basename(x) for x in v['nnsplitter']['blas']) or 'none'}"
             f", OPENBLAS_CORETYPE={v['nnsplitter']['OPENBLAS_CORETYPE'] or 'unset'}); PyTorch {t['torch']} "
             f"({t['onednn']}, CPU capability {t['cpu_capability']}, "
             f"{', '.join(os.path.basename(x) for x in t['libraries'] if 'blas' in x) or 'BLAS ' + str(t['blas_info'])})"
             f", {' '.join(f'{k}={v2}' for k, v2 in FAIR_MALLOC.items())}, best of NCHW/channels_last"
             + (", OMP_WAIT_POLICY=PASSIVE on both sides" if doc.get("omp_wait_policy") == "PASSIVE" else "") + ".",
             "Fixed search: configs/bench/search-MODEL.yaml (3 updates x 3 episodes x 200 steps, evaluation on 2,000 "
             "images every 100 steps)" + (f", overridden: {', '.join(doc['search_set'])}" if doc.get("search_set") else "")
             + "; weights: " + ", ".join(f"{k} {os.path.basename(v)}" + (" (initial, untrained)" if "-init-" in v else "")
                                  for k, v in doc.get("weights", {}).items()) + ".",
             "",
             "| workload | PyTorch | nnsplitter | ratio, median of pairs (range) | ratio by CPU time |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in doc["summary"]:
        rng = r["ratio_range"]
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}" + (f" ({rng[0]:.2f}–{rng[1]:.2f})" if rng else "")
        cpu = "–" if r.get("cpu_ratio") is None else f"{r['cpu_ratio']:.2f}"
        lines.append(f"| {r['workload']} | {fmt(r['pytorch'], r['key'])} | {fmt(r['nnsplitter'], r['key'])} | "
                     f"{ratio} | {cpu} |")
    ok = all(p["ok"] for p in doc["parity"]) if doc["parity"] else None
    if doc["parity"]:
        worst = max(p["max_rel_diff"] or 0 for p in doc["parity"])
        checked = ", ".join(sorted({f"{p['workload'].split('/')[0]} {p['checked_steps']}" for p in doc["parity"]}))
        lines += ["", f"Obfuscation-step parity (same mask, same batches; steps checked, those on which PyTorch's "
                      f"NCHW and channels_last runs agree to {PARITY_SELF_RTOL:.0e}: {checked}): "
                      f"{'ok' if ok else 'FAILED'}, largest relative loss difference {worst:.1e}."]
    lines += ["", f"Reproduce: `{doc['command']}`"]
    return "\n".join(lines)


def table(doc):
    w = max(len(r["workload"]) for r in doc["summary"]) if doc["summary"] else 10
    out = [f"{'workload':<{w}} {'PyTorch':>12} {'nnsplitter':>12} {'ratio':>7} {'by CPU':>7}  range"]
    for r in doc["summary"]:
        rng = r["ratio_range"]
        out.append(f"{r['workload']:<{w}} {fmt(r['pytorch'], r['key']):>12} {fmt(r['nnsplitter'], r['key']):>12} "
                   f"{'–' if r['ratio'] is None else format(r['ratio'], '.2f'):>7} "
                   f"{'–' if r.get('cpu_ratio') is None else format(r['cpu_ratio'], '.2f'):>7}  "
                   f"{'' if not rng else f'{rng[0]:.2f}–{rng[1]:.2f}'}")
    for p in doc["parity"]:
        out.append(f"parity {p['workload']} pair {p['pair']}: masked {p['masked_weights']}, max rel loss diff "
                   f"{p['max_rel_diff']:.1e} over {p['checked_steps']} of {p['steps']} steps "
                   f"({p['max_rel_diff_all_steps']:.1e} over all) -> {'ok' if p['ok'] else 'FAILED'}")
    return "\n".join(out)


# -------------------------------------------------------------------------------------- main
def parse(argv):
    ap = argparse.ArgumentParser(prog="tools/bench_compare.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3, help="alternating (ours, PyTorch) pairs per workload")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data-batches", type=int, default=4)
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds per throughput measurement")
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--models", default="lenet5,resnet20,resnet18", help="throughput models ('' for none)")
    ap.add_argument("--search", default="resnet20,lenet5", help="fixed-search models ('' for none)")
    ap.add_argument("--avx2", default=None,
                    help="throughput models measured again with both sides held to AVX2 (our NNS_CPU_ISA=avx2, "
                         "ONEDNN_MAX_CPU_ISA=AVX2 for both oneDNNs; '' for none; default: --models)")
    ap.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of configs/bench/search-*.yaml on both sides (repeatable)")
    ap.add_argument("--layouts", default="nchw,channels_last", help="PyTorch memory formats tried")
    ap.add_argument("--nnsplitter", help="the binary (default: build/, build-cpu/ or build-dev/nnsplitter)")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--victims", help="folder of trained victims (safetensors with arch/dataset metadata)")
    ap.add_argument("--victim-epochs", type=int, help="epochs when a victim must be trained")
    ap.add_argument("--missing-victims", choices=["train", "init"], default="train",
                    help="a victim not found: train it (cached), or use initial weights (labelled)")
    ap.add_argument("--untrained", action="store_true",
                    help="initial weights everywhere instead of trained victims (format tests)")
    ap.add_argument("--passive", action="store_true",
                    help="OMP_WAIT_POLICY=PASSIVE on both sides (a machine loaded beyond its cores)")
    ap.add_argument("--cache", default=os.path.join(ROOT, "results", "bench"))
    ap.add_argument("--out", help="JSON file (default: CACHE/compare-DATE.json)")
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    ap.add_argument("--from", dest="from_json", help="render an earlier JSON instead of measuring")
    ap.add_argument("--quick", action="store_true", help="smoke test: short timings, a 1x2x20-step search")
    ap.add_argument("--tiny", action="store_true", help="format test in seconds (lenet5 only, untrained)")
    a = ap.parse_args(argv)
    if a.quick or a.tiny:
        a.min_time, a.min_iters = (0.5, 3) if a.quick else (0.05, 8)
        a.search_set = ["controller.updates=1", "controller.episodes_per_update=2",
                        "splitter.max_steps=%d" % (20 if a.quick else 4),
                        "splitter.eval_every=%d" % (10 if a.quick else 2)] + a.search_set
    if a.tiny:
        a.pairs, a.models, a.search, a.untrained = min(a.pairs, 2), "lenet5", "lenet5", True
        a.batch, a.data_batches, a.layouts = 32, 2, "nchw"
        a.search_set = ["splitter.val_size=256", "splitter.batch=32"] + a.search_set
    for name in ("pairs", "threads", "batch", "data_batches", "min_iters"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    a.model_list = [m for m in a.models.split(",") if m]
    if a.avx2 is None:
        a.avx2 = "" if a.tiny else a.models
    a.avx2_list = [m for m in a.avx2.split(",") if m]
    for m in a.avx2_list:
        if m not in a.model_list:
            ap.error(f"--avx2: {m} is not among --models")
    a.search_list = [m for m in a.search.split(",") if m]
    for m in a.model_list:
        if m not in ("lenet5", "resnet20", "resnet18"):
            ap.error(f"--models: {m} is not one of lenet5, resnet20, resnet18")
    for m in a.search_list:
        if not os.path.exists(os.path.join(ROOT, "configs", "bench", f"search-{m}.yaml")):
            ap.error(f"--search: no configs/bench/search-{m}.yaml")
    return a


def write_json(path, doc):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)


def measure(a, argv):
    binary = find_binary(a.nnsplitter)
    if not os.path.isdir(a.data_dir):
        raise Failure(f"{a.data_dir}: no Fashion-MNIST here (Debian: apt install dataset-fashion-mnist; "
                      "or give --data-dir)")
    doc = {"tool": "tools/bench_compare.sh", "date": datetime.datetime.now(datetime.timezone.utc)
           .strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "threads": a.threads, "batch": a.batch,
           "pairs": a.pairs, "min_time": a.min_time, "omp_wait_policy": "PASSIVE" if a.passive else "default", "search_set": a.search_set,
           "command": "tools/bench_compare.sh " + " ".join(argv), "loadavg_before": loadavg(),
           "versions": {"nnsplitter": our_versions(binary), "torch": torch_versions()}}
    out = a.out or os.path.join(a.cache, "compare-" + doc["date"][:16].replace(" ", "-").replace(":", "") + ".json")
    s = Session(a, binary)
    weights = {}
    for arch in dict.fromkeys(a.model_list + a.search_list):
        if arch == "resnet18":
            weights[arch] = init_weights(arch, "cifar10", os.path.join(a.cache, "init", "resnet18-init-cifar10.safetensors"))
        elif a.untrained or (a.missing_victims == "init" and not find_victim(arch, "fashion-mnist", victim_dirs(a))):
            weights[arch] = init_weights(arch, "fashion-mnist",
                                         os.path.join(a.cache, "init", f"{arch}-init-fashion-mnist.safetensors"))
        else:
            weights[arch] = trained_victim(a, arch, binary)
    doc["weights"] = {k: os.path.abspath(v) for k, v in weights.items()}
    cifar = synthetic_cifar(os.path.join(a.cache, "cifar-synthetic")) if "resnet18" in a.model_list else None
    t0 = time.perf_counter()

    def finish(done):
        doc["pairs_done"] = done
        doc["seconds"] = time.perf_counter() - t0
        doc["loadavg_after"] = loadavg()
        doc["busy"] = max(doc["loadavg_before"][0], doc["loadavg_after"][0]) > (os.cpu_count() or 1) * 0.75
        doc["runs"] = s.runs
        doc["summary"] = summarise(s.runs)
        doc["parity"] = parity(s.runs)
        write_json(out, doc)

    # After every pair the JSON holds the pairs so far; Ctrl-C keeps the finished pairs.
    try:
        for pair in range(1, a.pairs + 1):
            log(f"pair {pair}/{a.pairs} (load average {loadavg()[0]})")
            for arch in a.model_list:
                s.throughput(arch, weights[arch], cifar if arch == "resnet18" else a.data_dir, pair)
            for arch in a.avx2_list:
                s.throughput(arch, weights[arch], cifar if arch == "resnet18" else a.data_dir, pair, "avx2")
            for arch in a.search_list:
                s.search(arch, weights[arch], pair)
            finish(pair)
    except KeyboardInterrupt:
        s.runs = [r for r in s.runs if r["pair"] <= doc.get("pairs_done", 0)]
        finish(doc.get("pairs_done", 0))
        raise
    log(f"wrote {out}")
    return doc


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv):
    global PASSIVE
    a = parse(argv)
    PASSIVE = a.passive
    signal.signal(signal.SIGTERM, _interrupt)   # like Ctrl-C: keep the finished pairs
    signal.signal(signal.SIGINT, _interrupt)    # also where a shell started us with SIGINT ignored
    try:
        if a.from_json:
            with open(a.from_json) as f:
                doc = json.load(f)
        else:
            doc = measure(a, argv)
    except KeyboardInterrupt:
        log("bench_compare: interrupted; the JSON keeps the finished pairs (render it with --from)")
        return 1
    except Failure as e:
        log(f"bench_compare: {e}")
        return 1
    except (OSError, KeyError, json.JSONDecodeError) as e:
        log(f"bench_compare: {e}")
        return 1
    print(markdown(doc) if a.markdown else table(doc))
    return 0 if all(p["ok"] for p in doc["parity"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
