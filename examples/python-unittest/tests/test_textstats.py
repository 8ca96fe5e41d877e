"""Tests for scripts/textstats.py, standard library unittest only.

Run from the skill root: python3 -m unittest discover -s tests -v
"""

import io
import json
import subprocess
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "textstats.py"

# `discover -s tests` puts tests/ on sys.path, not the skill root: add scripts/ ourselves.
sys.path.insert(0, str(SCRIPT.parent))

import textstats  # noqa: E402


class WordsTest(unittest.TestCase):
    def test_splits_on_punctuation_and_lowercases(self):
        self.assertEqual(textstats.words("Hello, World! hello"), ["hello", "world", "hello"])

    def test_keeps_apostrophes_inside_words(self):
        self.assertEqual(textstats.words("Don't stop"), ["don't", "stop"])

    def test_underscores_separate_words(self):
        self.assertEqual(textstats.words("snake_case"), ["snake", "case"])

    def test_empty_text_has_no_words(self):
        self.assertEqual(textstats.words(""), [])


class StatsTest(unittest.TestCase):
    def test_counts(self):
        s = textstats.stats("the cat\nand the hat\n")
        self.assertEqual(s["lines"], 2)
        self.assertEqual(s["words"], 5)
        self.assertEqual(s["chars"], 20)

    def test_top_breaks_ties_alphabetically(self):
        s = textstats.stats("b a c b a", top=3)
        self.assertEqual(s["top"], [["a", 2], ["b", 2], ["c", 1]])

    def test_top_zero_is_empty(self):
        self.assertEqual(textstats.stats("x y", top=0)["top"], [])

    def test_negative_top_is_refused(self):
        with self.assertRaises(ValueError):
            textstats.stats("x", top=-1)


class CommandLineTest(unittest.TestCase):
    def test_main_reads_stdin_and_prints_json(self):
        out = io.StringIO()
        saved, sys.stdout = sys.stdout, out
        try:
            code = textstats.main(["--top", "1"], stdin=io.StringIO("a b a"))
        finally:
            sys.stdout = saved
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out.getvalue())["top"], [["a", 2]])

    def test_script_runs_as_a_program(self):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--top", "2"],
            input="the cat and the hat",
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(
            json.loads(proc.stdout),
            {"lines": 1, "words": 5, "chars": 19, "top": [["the", 2], ["and", 1]]},
        )


if __name__ == "__main__":
    unittest.main()
