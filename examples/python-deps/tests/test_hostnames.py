import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))

import idna  # noqa: E402  (installed from requirements.txt)
import six  # noqa: E402

import hostnames  # noqa: E402


class HostnamesTest(unittest.TestCase):
    def test_the_pinned_versions_are_installed(self):
        self.assertEqual(idna.__version__, "3.7")
        self.assertEqual(six.__version__, "1.16.0")

    def test_unicode_to_ascii_and_back(self):
        got = hostnames.describe("bücher.example")
        self.assertEqual(got["ascii"], "xn--bcher-kva.example")
        self.assertEqual(got["unicode"], "bücher.example")
        self.assertEqual(got["labels"], ["bücher", "example"])

    def test_the_command_line(self):
        script = os.path.join(os.path.dirname(__file__), "..", "scripts", "hostnames.py")
        out = subprocess.run(
            [sys.executable, script, "xn--bcher-kva.example"],
            capture_output=True, text=True, check=True,
        )
        self.assertIn('"unicode": "bücher.example"', out.stdout)


if __name__ == "__main__":
    unittest.main()
