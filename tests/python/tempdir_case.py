"""A unittest case with a fresh temporary folder per test (removed afterwards)."""
import os
import shutil
import tempfile
import unittest


class TempDirCase(unittest.TestCase):
    prefix = "nns-test-"

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix=self.prefix)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)
