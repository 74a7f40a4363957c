"""Zip a function folder reproducibly (same files → same bytes → same code digest).

    .venv/bin/python examples/functions/zip.py examples/functions/hello-deps /tmp/hello-deps.zip
    .venv/bin/minictl function create hello-deps --zip /tmp/hello-deps.zip

``minictl function create NAME --zip FOLDER`` does the same in memory; this script is for when you
want the archive itself.
"""

import sys
from pathlib import Path

from minictl.functions import zip_folder


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not Path(argv[0]).is_dir():
        print("usage: zip.py FOLDER OUT.zip", file=sys.stderr)
        return 2
    data = zip_folder(Path(argv[0]))
    Path(argv[1]).write_bytes(data)
    print(f"{argv[1]}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
