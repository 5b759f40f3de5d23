"""Writing a file atomically: a temporary file in the same folder, then a rename, so that an
interrupted write never leaves a truncated file. Imports nothing of pixgen but its errors."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pixgen.errors import PixgenError


@functools.cache
def _file_mode() -> int:
    """0o666 less the process umask: what an ordinary open() would have created."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for the caller to write (for writers that want a file
    name); on leaving it is synced and renamed onto `path`, or removed when the block fails.
    An OSError, in the block or in the rename, is one PixgenError naming `path`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise PixgenError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), _file_mode())  # mkstemp makes 0600 files (and so do some writers)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise PixgenError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and a rename; never a partial file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
