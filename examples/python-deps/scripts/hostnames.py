"""Host names between their Unicode and ASCII (IDNA) forms."""

import json
import sys

import idna
import six


def describe(name):
    """The ASCII and Unicode forms of `name` and its labels."""
    name = name.strip().rstrip(".")
    ascii_form = idna.encode(name, uts46=True).decode("ascii")
    unicode_form = idna.decode(ascii_form)
    return {
        "ascii": ascii_form,
        "unicode": unicode_form,
        "labels": [six.ensure_text(label) for label in unicode_form.split(".")],
    }


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: hostnames.py NAME", file=sys.stderr)
        return 2
    print(json.dumps(describe(argv[1]), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
