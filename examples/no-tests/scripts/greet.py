#!/usr/bin/env python3
"""Prints a greeting that fits the hour of the day."""

from __future__ import annotations

import argparse
import datetime
import sys


def greeting(name: str, hour: int) -> str:
    """The greeting for `name` at `hour` (0-23)."""
    if not 0 <= hour <= 23:
        raise ValueError("hour must be between 0 and 23")
    if hour < 12:
        part = "morning"
    elif hour < 18:
        part = "afternoon"
    else:
        part = "evening"
    return f"Good {part}, {name}!"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", nargs="?", default="world")
    parser.add_argument("--hour", type=int, help="hour of the day (default: now)")
    args = parser.parse_args(argv)
    hour = datetime.datetime.now().hour if args.hour is None else args.hour
    try:
        print(greeting(args.name, hour))
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
