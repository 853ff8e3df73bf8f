"""Optional dependencies: the commands that need one say which extra installs it."""

from __future__ import annotations

import importlib


class MissingExtra(ValueError):
    """A command's optional dependency is not installed; the message names the extra."""


def require(module: str, extra: str, what: str):
    """`module`, imported; if it is not installed, a `MissingExtra` saying
    "`what` needs `module`: pip install 'uld[extra]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(
            f"{what} needs {e.name or module}, which is not installed: install uld[{extra}] "
            f"(pip install 'uld[{extra}]', or pip install -e '.[{extra}]' in a clone)"
        ) from None
