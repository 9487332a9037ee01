#!/bin/sh
# nnsplitter against PyTorch, alternating, one table: see tools/bench_compare.py (--help).
#   tools/bench_compare.sh --markdown        # the README performance table (~45 min, quiet 2 cores)
#   tools/bench_compare.sh --quick           # smoke test (a few minutes)
exec /usr/bin/python3 "$(dirname "$0")/bench_compare.py" "$@"
