"""A job folder as a dict of files (relative POSIX path -> bytes), the form in which it travels
between a Ray worker and the driver: read in full or as what changed since the last read, and
written back (only what differs, run.json last, each file atomically). No torch, no ray."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from pixgen.errors import PixgenError
from pixgen.files import atomic_write

STREAMED = (".mp4",)  # written while the run goes (the video encoder's): never sent half-made


def safe_relative(name: str) -> PurePosixPath:
    """`name` as a path inside a folder: relative, with no '..' nor empty parts, else a PixgenError
    (a folder's files are only ever written inside it)."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")) or "\\" in name:
        raise PixgenError(f"refusing to write {name!r}: not a plain path inside the job folder")
    return path


class Snapshot:
    """The files of `root` sent so far: `changes()` reads those new or changed since the last
    call (all of them with `everything`), leaving out hidden files (atomic writes under way) and,
    unless `finished`, the videos still being encoded."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.sent: dict[str, tuple[int, int]] = {}

    def changes(self, everything: bool = False, finished: bool = False) -> dict[str, bytes]:
        out = {}
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.name.startswith(".") or (path.suffix in STREAMED and not finished):
                continue
            name = path.relative_to(self.root).as_posix()
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if everything or self.sent.get(name) != key:
                out[name] = path.read_bytes()
                self.sent[name] = key
        return out


def write_tree(root: Path, files: dict[str, bytes], exact: bool = False) -> None:
    """Write `files` under `root`: those whose bytes differ from what is there (so files already
    written stay as they are), run.json files last (a run.json says what the folder holds). With
    `exact`, files under `root` that are not in `files` go (the folder becomes exactly `files`)."""
    root = Path(root)
    names = sorted(files, key=lambda n: (PurePosixPath(n).name == "run.json", n))
    for name in names:
        target = root / safe_relative(name)
        if target.is_file() and target.read_bytes() == files[name]:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, files[name])
    if exact and root.is_dir():
        wanted = {root / safe_relative(n) for n in files}
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_file() and not path.name.startswith(".") and path not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def read_tree(root: Path) -> dict[str, bytes]:
    """Every finished file under `root` (an unfinished job's folder, to go on from)."""
    return Snapshot(root).changes(everything=True)
