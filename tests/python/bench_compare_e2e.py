#!/usr/bin/python3
"""End-to-end check of tools/bench_compare.sh in its tiny mode (ctest bench_compare_tiny): the
output format, the alternation and the obfuscation-step parity, never the timings.

    /usr/bin/python3 tests/python/bench_compare_e2e.py PATH-TO-nnsplitter

Exit 0 on success, 1 on a failed check, 77 (skipped) without Fashion-MNIST or torch.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = "/usr/share/datasets/fashion-mnist"


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}")
        sys.exit(1)


def main(binary):
    if not os.path.isdir(DATA) or subprocess.run([sys.executable, "-c", "import torch"]).returncode != 0:
        print(f"skipped: needs {DATA} and Debian's python3-torch")
        return 77
    tmp = tempfile.mkdtemp(prefix="nns-bench-compare-")
    try:
        out = os.path.join(tmp, "c.json")
        cmd = [os.path.join(ROOT, "tools", "bench_compare.sh"), "--tiny", "--nnsplitter", binary, "--cache", tmp,
               "--out", out, "--markdown"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=1700)
        print(p.stderr[-4000:])
        check(p.returncode == 0, f"exit status {p.returncode}")
        doc = json.load(open(out))
        for key in ("date", "machine", "versions", "threads", "batch", "pairs", "runs", "summary", "parity",
                    "loadavg_before", "loadavg_after", "command"):
            check(key in doc, f"JSON has no '{key}'")
        check(doc["machine"]["cores"] >= 1 and doc["machine"]["cpu"], "machine: CPU model and cores")
        check(doc["versions"]["torch"]["torch"].startswith("1.") or doc["versions"]["torch"]["torch"][0].isdigit(),
              "torch version recorded")
        check(doc["versions"]["nnsplitter"]["commit"] not in ("", None), "our commit recorded")
        check(doc["threads"] == 2, "threads recorded")
        # Alternation: per workload the sides go nnsplitter, pytorch, nnsplitter, pytorch, ...
        for w in {r["workload"] for r in doc["runs"]}:
            sides = [r["side"] for r in doc["runs"] if r["workload"] == w]
            check(sides == ["nnsplitter", "pytorch"] * doc["pairs"], f"{w}: order {sides}")
            check(all(r["max_rss_mib"] and r["max_rss_mib"] > 1 for r in doc["runs"] if r["workload"] == w),
                  f"{w}: peak memory of every process")
        # Every summary ratio is the median of the pair ratios of the recorded runs.
        for row in doc["summary"]:
            check(row["pairs"] == doc["pairs"], f"{row['workload']}: {row['pairs']} pairs")
            check(row["ratio"] is not None and row["ratio"] > 0, f"{row['workload']}: ratio")
        train = next(r for r in doc["summary"] if r["key"] == "training_images_per_second")
        by = {}
        for r in doc["runs"]:
            if r["workload"] == "lenet5/throughput":
                by.setdefault(r["pair"], {})[r["side"]] = r["training_images_per_second"]
        want = statistics.median(v["nnsplitter"] / v["pytorch"] for v in by.values())
        check(abs(train["ratio"] - want) < 1e-9, f"training ratio {train['ratio']} != median of pairs {want}")
        check(len(doc["parity"]) == doc["pairs"] and all(x["ok"] for x in doc["parity"]), "obfuscation parity")
        check(doc["parity"][0]["steps"] >= 5, "parity over at least 5 steps")
        md = p.stdout
        check("| workload | PyTorch | nnsplitter |" in md, "markdown table header")
        check(sum(1 for ln in md.splitlines() if ln.startswith("| lenet5")) == len(doc["summary"]), "one row per result")
        check("Reproduce: `tools/bench_compare.sh" in md and doc["machine"]["cpu"] in md, "provenance lines")
        again = subprocess.run([os.path.join(ROOT, "tools", "bench_compare.sh"), "--from", out, "--markdown"],
                               capture_output=True, text=True)
        check(again.returncode == 0 and again.stdout == md, "--from re-renders the same table")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("bench_compare tiny: ok")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(os.path.abspath(sys.argv[1])))
