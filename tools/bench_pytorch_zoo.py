#!/usr/bin/python3
"""The zoo mode of tools/bench_pytorch.py: PyTorch throughput of freshly initialised zoo models on
random inputs, CPU or CUDA, for comparison with `nnsplitter bench` on a GPU (tools/gpu_check.sh,
tools/gpu_prebuilt.sh). The CPU comparison with trained models and real images is
tools/bench_compare.sh. Reached through tools/bench_pytorch.py, which applies the fair glibc
setting first (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_, see there):

    /usr/bin/python3 tools/bench_pytorch.py [--threads 2] [--batch 128] [--device cpu|cuda] [--json]

With --device cuda the models and data live on the GPU, each timed iteration ends with
torch.cuda.synchronize(), and cuDNN runs with benchmark=False and allow_tf32=False for
convolutions and matmuls (float32 arithmetic, as nnsplitter's own CUDA backend).

For lenet5 (1x28x28), resnet20 (1x28x28) and resnet18 (3x32x32), batch 128, random inputs:
  * inference: model.eval(), torch.no_grad(), one forward per iteration;
  * training:  model.train(), forward + cross-entropy + backward + SGD step (momentum 0.9,
               weight decay 5e-4, lr 0.01) per iteration.
Each measurement warms up (2 iterations, at least 0.5 s), then times single iterations until it
has at least --min-iters (5) and --min-time (3 s) of them (at most --max-time s), and reports
batch / median(iteration time) in images/s, plus the median process CPU time per batch
(all threads; with --passive a contention-robust measure of the work). torch.get_num_threads() defaults to 1 on these
machines, so the thread count is always set explicitly (--threads, default 2).

On a machine shared with other work (load average above the free cores), libgomp's spinning
workers collapse PyTorch's multi-threaded throughput (10x and more); --passive sets
OMP_WAIT_POLICY=PASSIVE before torch is loaded, which avoids that (slightly slower when idle).
The JSON records the load average and a warning when the machine was busy.
Use /usr/bin/python3 (Debian's python3-torch).
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

if "--passive" in sys.argv[1:]:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"   # must precede libgomp's initialisation

import torch  # noqa: E402
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402

CASES = [("lenet5", 1, 28), ("resnet20", 1, 28), ("resnet18", 3, 32)]


_SYNC = lambda: None


def _measure(step, min_iters, min_time, max_time):
    t_end = time.perf_counter() + 0.5
    for i in range(1000):
        step()
        _SYNC()
        if i >= 1 and time.perf_counter() >= t_end:
            break
    times, cpu = [], []
    start = time.perf_counter()
    while True:
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        _SYNC()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        elapsed = time.perf_counter() - start
        if len(times) >= min_iters and (elapsed >= min_time or elapsed >= max_time):
            break
    return statistics.median(times), len(times), statistics.median(cpu)


def bench_case(arch, cin, size, batch, min_iters, min_time, max_time, device="cpu"):
    torch.manual_seed(0)
    model = torch_models.build(arch, cin, 10, size).to(device)
    x = torch.randn(batch, cin, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    res = {"arch": arch, "input": [cin, size, size], "batch": batch, "device": device,
           "params": sum(p.numel() for p in model.parameters())}

    model.eval()

    def infer():
        with torch.no_grad():
            model(x)

    med, n, cpu = _measure(infer, min_iters, min_time, max_time)
    res["infer_images_per_s"] = batch / med
    res["infer_ms_per_batch"] = med * 1e3
    res["infer_cpu_ms_per_batch"] = cpu * 1e3
    res["infer_iters"] = n

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def train():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    med, n, cpu = _measure(train, min_iters, min_time, max_time)
    res["train_images_per_s"] = batch / med
    res["train_ms_per_batch"] = med * 1e3
    res["train_cpu_ms_per_batch"] = cpu * 1e3
    res["train_iters"] = n
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds of timed iterations per measurement")
    ap.add_argument("--max-time", type=float, default=20.0, help="stop adding iterations after this (s)")
    ap.add_argument("--only", nargs="*", help="subset of: " + " ".join(c[0] for c in CASES))
    ap.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE (for busy machines)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where the models run (cuda: synchronized timings, no TF32)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            print("bench_pytorch: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
            return 1
        global _SYNC
        _SYNC = torch.cuda.synchronize
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    info = {"framework": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
            "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
            "cpu": platform.processor() or platform.machine(), "batch": a.batch,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "results": [],
            "device": a.device if a.device == "cpu" else torch.cuda.get_device_name(0)}
    info["loadavg_before"] = round(os.getloadavg()[0], 2)
    info["cpus"] = os.cpu_count()
    t_all = time.perf_counter()
    for arch, cin, size in CASES:
        if a.only and arch not in a.only:
            continue
        info["results"].append(bench_case(arch, cin, size, a.batch, a.min_iters, a.min_time, a.max_time,
                                          a.device))
        if not a.json:
            r = info["results"][-1]
            if len(info["results"]) == 1:
                print(f"# {info['framework']} on {info['device']}, {info['threads']} threads, mkldnn {info['mkldnn']}, batch {a.batch}, "
                      f"OMP_WAIT_POLICY {info['omp_wait_policy']}")
                print(f"{'model':<10}{'input':>10}{'params':>12}{'infer img/s':>13}{'ms/batch':>10}{'cpu ms':>9}"
                      f"{'train img/s':>13}{'ms/batch':>10}{'cpu ms':>9}")
            print(f"{arch:<10}{f'{cin}x{size}x{size}':>10}{r['params']:>12,}{r['infer_images_per_s']:>13.1f}"
                  f"{r['infer_ms_per_batch']:>10.1f}{r['infer_cpu_ms_per_batch']:>9.1f}{r['train_images_per_s']:>13.1f}"
                  f"{r['train_ms_per_batch']:>10.1f}{r['train_cpu_ms_per_batch']:>9.1f}",
                  flush=True)
    info["wall_s"] = time.perf_counter() - t_all
    info["loadavg_after"] = round(os.getloadavg()[0], 2)
    busy = max(info["loadavg_before"], info["loadavg_after"])
    warning = None
    if busy + a.threads > (info["cpus"] or 1) + 0.5:
        warning = (f"the machine was busy (1-min load average {busy} on {info['cpus']} CPUs): "
                   "multi-threaded timings are unreliable under oversubscription; rerun when idle"
                   + ("" if os.environ.get("OMP_WAIT_POLICY") else " or with --passive"))
        info["warning"] = warning
    if a.json:
        print(json.dumps(info, indent=1))
    else:
        print(f"# total {info['wall_s']:.0f} s, load average {info['loadavg_before']} -> {info['loadavg_after']}")
        if warning:
            print(f"# WARNING: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
