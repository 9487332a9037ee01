#!/usr/bin/python3
"""Runs every tests/python/test_*.py with unittest and exits non-zero on any failure.

    /usr/bin/python3 tests/python/run_all.py [PATH-TO-nnsplitter]

The optional binary path is exported as NNS_BINARY for tests that drive the CLI. The last line
printed is "N passed, M failed" (plus ", K skipped" when some were skipped).
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main(argv):
    if len(argv) > 1:
        os.environ["NNS_BINARY"] = os.path.abspath(argv[1])
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    sys.path.insert(0, HERE)
    suite = unittest.defaultTestLoader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
