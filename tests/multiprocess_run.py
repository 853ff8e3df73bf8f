"""Runs `uld` commands one after the other in each process of a launch (not a test module):

    torchrun --nproc_per_node 2 tests/multiprocess_run.py unlearn ... -- eval ...

Exits with the first non-zero status."""

import sys

from uld.cli import main

if __name__ == "__main__":
    commands, current = [], []
    for arg in sys.argv[1:]:
        if arg == "--":
            commands.append(current)
            current = []
        else:
            current.append(arg)
    commands.append(current)
    for argv in commands:
        status = main(argv)
        if status:
            sys.exit(status)
