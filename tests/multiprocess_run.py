"""Runs `uld` commands one after the other in each process of a launch (not a test module):

    torchrun --nproc_per_node 2 tests/multiprocess_run.py unlearn ... -- eval ...

Exits with the first non-zero status. The main process creates files readable by all (umask
022), the others readable by their owner only (umask 077), so that a test can tell whether a
process other than the main one wrote a file."""

import os
import sys

from uld import dist
from uld.cli import main

if __name__ == "__main__":
    os.umask(0o022 if dist.is_main() else 0o077)
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
