#!/usr/bin/env python3
"""Text statistics: lines, words, characters and the most frequent words.

Standard library only, so it runs in any Python 3.9+ without installing anything.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from typing import TextIO

# Letters, digits and apostrophes ("don't" is one word); \w would also match "_".
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text: str) -> list[str]:
    """The words of `text`, lower-cased, in order."""
    return [w.lower() for w in WORD.findall(text)]


def stats(text: str, top: int = 3) -> dict:
    """Line, word and character counts plus the `top` most frequent words.

    Ties are broken alphabetically so the result does not depend on input order.
    """
    if top < 0:
        raise ValueError("top must be >= 0")
    ws = words(text)
    counts = Counter(ws)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "lines": len(text.splitlines()),
        "words": len(ws),
        "chars": len(text),
        "top": [[w, n] for w, n in ranked],
    }


def main(argv: list[str] | None = None, stdin: TextIO = sys.stdin) -> int:
    """Command-line entry point; prints JSON, returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="text file (default: stdin)")
    parser.add_argument("--top", type=int, default=3, help="how many frequent words")
    args = parser.parse_args(argv)
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    else:
        text = stdin.read()
    try:
        result = stats(text, args.top)
    except ValueError as e:
        parser.error(str(e))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
