"""The driver's side of a Ray batch, as a small actor on the driver's node: what the workers
report while a job runs. Plain Python (pixgen.apps.ray_batch makes it a Ray actor); no torch.

It keeps each unfinished job's folder as of its last checkpoint (a job that Ray retries after
its worker died starts from there), the checkpoints that the driver has not yet written into the
job folders, and each worker's latest step."""

from __future__ import annotations


class Ledger:
    def __init__(self):
        self.folders: dict[str, dict[str, bytes]] = {}  # job -> its files at its last checkpoint
        self.unwritten: dict[str, tuple[dict[str, bytes], bool]] = {}  # job -> (files, exact) for the driver
        self.steps: dict[str, tuple] = {}  # worker -> (job, step, total)

    def seed(self, name: str, files: dict[str, bytes]) -> None:
        """A job's folder as the driver found it (an interrupted job's, with --resume)."""
        self.folders[name] = dict(files)

    def latest(self, name: str) -> dict[str, bytes]:
        """The job's folder at its last checkpoint ({} when it has none): where a (re)try starts."""
        return self.folders.get(name, {})

    def report(self, worker: str, name: str, step: int, total: int, files=None, exact: bool = False) -> None:
        """A worker's step of job `name`; with `files`, a checkpoint: the files changed since its
        last one (or, `exact`, the whole folder)."""
        self.steps[worker] = (name, step, total)
        if files is None:
            return
        base = {} if exact else self.folders.get(name, {})
        self.folders[name] = {**base, **files}
        earlier, was_exact = self.unwritten.get(name, ({}, False))
        self.unwritten[name] = (dict(files), True) if exact else ({**earlier, **files}, was_exact)

    def drain(self) -> tuple[dict, dict]:
        """The checkpoints not yet taken and every worker's latest step."""
        unwritten, self.unwritten = self.unwritten, {}
        return unwritten, dict(self.steps)

    def forget(self, name: str) -> None:
        """A finished job: its folder is the driver's now."""
        self.folders.pop(name, None)
        self.unwritten.pop(name, None)
