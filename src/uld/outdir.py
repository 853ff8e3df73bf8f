"""Output folders that never lose a user's data.

Every folder uld writes (a model, an evaluation, exported data) is built in a temporary sibling
and moved into place whole, and carries a marker, `.uld.json`, naming what made it and the files
it wrote. Before any work, `check_out` refuses an output that

- is one of the command's inputs (the model being read, a data folder) or a folder above one;
- holds files that uld did not write, or a finished uld result, unless `overwrite` is given;
- cannot be written to (checked by writing, so that a long run does not fail at its end);

and even with `overwrite`, only the files named in the old marker are removed: anything else in
the folder stays, and a new file that would replace a foreign one of the same name is refused.

`locked(out)` keeps a second uld process off the same output (a `filelock` lock, which the OS
frees when its holder dies, on every OS). A killed run can leave a temporary sibling behind; the
next run on the same output removes those of dead processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from uld import dist

MARKER = ".uld.json"
TMP_TAG = "uldtmp"


class OutputError(ValueError):
    """An output path uld must not (or cannot) write to; the message says what to do."""


def read_marker(folder: str | Path) -> dict | None:
    """The marker of a folder uld wrote, or None (no marker, or an unreadable one)."""
    try:
        marker = json.loads(Path(folder, MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), list) else None


def foreign_files(folder: str | Path) -> list[str]:
    """The entries of `folder` that its marker does not name (all of them without a marker)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    ours = set((read_marker(folder) or {}).get("files", [])) | {MARKER}
    return sorted(p.name for p in folder.iterdir() if p.name not in ours)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out(
    out: str | Path,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    flag: str = "--out",
) -> Path:
    """Refuse `out` (see the module docstring) before any work is done; returns it absolute.

    `inputs`: paths the command reads (a model folder, a data folder, a file); hub ids and
    names that are not local paths are ignored."""
    if str(out).strip() == "":
        raise OutputError(f"{flag} is empty: name the folder to write")
    path = Path(out).expanduser().resolve()
    for given in inputs:
        if not given or not Path(str(given)).expanduser().exists():
            continue
        source = Path(str(given)).expanduser().resolve()
        if _is_within(source, path):
            what = "is" if source == path else "holds"
            raise OutputError(
                f"{flag} {out} {what} {given}, which this command reads: writing there would "
                f"destroy its input; choose another {flag}"
            )
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {out} is a file, not a folder; choose another {flag}")
    if path.is_dir() and any(path.iterdir()):
        foreign = foreign_files(path)
        if foreign and not overwrite:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise OutputError(
                f"{flag} {out} holds {len(foreign)} file(s) that uld did not write ({shown}); "
                f"uld never deletes those: choose another {flag} (or pass --overwrite to write "
                "beside them, replacing only uld's own files)"
            )
        marker = read_marker(path)
        if marker and not overwrite:
            raise OutputError(
                f"{flag} {out} already holds a result of {marker.get('made_by', 'uld')} "
                f"({marker.get('time', 'unknown time')}); pass --overwrite to replace it, or "
                f"choose another {flag}"
            )
    _check_writable(path, flag)
    return path


def _check_writable(path: Path, flag: str) -> None:
    """Write a file where the output will go: its folder if it exists, else the nearest
    existing folder above it (the one whose permission decides whether it can be made)."""
    probe = path if path.is_dir() else path.parent
    while not probe.exists():
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
        if path.is_dir() and path.parent.exists():  # the temporary sibling goes in the parent
            with tempfile.TemporaryFile(dir=path.parent):
                pass
    except OSError as e:
        raise OutputError(
            f"{flag} {path} cannot be written ({e.strerror or e}); choose a writable {flag}"
        ) from e


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(out: Path) -> list[Path]:
    """Remove the temporary siblings of `out` that processes no longer alive left behind (a run
    killed while saving). Returns what was removed."""
    removed = []
    for tmp in out.parent.glob(f".{out.name}.{TMP_TAG}-*"):
        pid = tmp.name.split(f".{TMP_TAG}-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
            removed.append(tmp)
    return removed


class output_dir:
    """`with output_dir(out, "uld finetune") as tmp:` write into `tmp`; on success its files
    (with the marker) land in `out`, whole; on an error `tmp` is removed and `out` untouched.

    A new `out` appears by one rename. An existing one (checked by `check_out`: empty, or ours
    and `overwrite`) gets its old uld files removed and the new ones moved in; files the old
    marker does not name are left where they are."""

    def __init__(self, out: str | Path, made_by: str, overwrite: bool = False):
        self.out = Path(out).expanduser().resolve()
        self.made_by, self.overwrite = made_by, overwrite

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.out)
        prefix = f".{self.out.name}.{TMP_TAG}-{os.getpid()}-"
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._land()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _land(self) -> None:
        files = sorted(p.name for p in self.tmp.iterdir())
        marker = {
            "made_by": self.made_by,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
            "files": files,
        }
        Path(self.tmp, MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        if not self.out.exists():
            self.tmp.rename(self.out)
            return
        if not self.out.is_dir():
            raise OutputError(f"{self.out} is a file, not a folder; nothing was written")
        old = read_marker(self.out)
        if any(self.out.iterdir()) and old is not None and not self.overwrite:
            raise OutputError(
                f"{self.out} was written by {old.get('made_by', 'uld')} while this run went on; "
                "nothing was replaced (pass --overwrite to replace it)"
            )
        ours = set((old or {}).get("files", []))
        clash = sorted(f for f in files if (self.out / f).exists() and f not in ours)
        if clash:
            raise OutputError(
                f"{self.out} holds {', '.join(clash)}, which uld did not write and this run "
                "would replace; move them away or choose another output. Nothing was replaced"
            )
        for name in sorted(ours | {MARKER}):
            p = self.out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        for name in [*files, MARKER]:
            (self.tmp / name).rename(self.out / name)


@contextlib.contextmanager
def locked(out: str | Path, what: str = "output") -> Iterator[None]:
    """Hold the lock of `out` (`.<name>.lock` beside it) for the block; refuse at once if
    another process holds it. The OS frees the lock when its holder dies. Of the processes of
    one launch (`uld.dist`), the main one holds it: the others write nothing."""
    from filelock import FileLock, Timeout

    if not dist.is_main():
        yield
        return
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputError(
            f"another uld process is writing the {what} {out} (it holds {path}); wait for it to "
            "finish, or choose another output"
        ) from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while held: a waiting process fails to lock and says so
        lock.release()


def write_json(obj, path: Path) -> None:
    """Write JSON atomically (see `write_text`)."""
    write_text(json.dumps(obj, indent=1, default=float) + "\n", path)


def write_text(text: str, path: Path) -> None:
    """Write a file atomically: a temporary file renamed into place, so a crash never leaves a
    half-written one (its folder is created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # processes may write one file
    tmp.write_text(text)
    tmp.replace(path)
