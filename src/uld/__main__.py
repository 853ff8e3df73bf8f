"""`python -m uld` is the `uld` command; `accelerate launch -m uld ...` runs it on several
processes (`uld.dist`)."""

import sys

from uld.cli import main

sys.exit(main())
