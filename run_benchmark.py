#!/usr/bin/env python3
"""nint-bench from a clone, without installing: the same program as the `nint-bench` command.

    python3 run_benchmark.py --help
    python3 run_benchmark.py                  # the offline demo
    python3 run_benchmark.py run --suite kodak --strategies nint,int,uniform,standard

The command line lives in benchmark/cli.py.
"""
from __future__ import annotations

import sys

from benchmark import cli


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, prog="python3 run_benchmark.py")


if __name__ == "__main__":
    sys.exit(main())
