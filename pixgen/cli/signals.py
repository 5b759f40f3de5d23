"""Ctrl-C and SIGTERM on the command line: the first asks the run to stop at its next safe point,
a second aborts at once (pixgen.phases). No torch."""

from __future__ import annotations

import sys


def signal_at_phase(phase) -> None:
    """A test hook: with PIXGEN_TEST_SIGNAL_AT=PHASE[,PHASE...] (pixgen.phases.Phase names, such
    as LOADING_CLIP) the process sends itself SIGINT when that phase begins, once per name given (a
    real signal, through the real handler), so that tests can stop a real run in a phase of their
    choosing. The test names a phase, never a message: rewording a message cannot move a stop."""
    import os

    wanted = os.environ.get("PIXGEN_TEST_SIGNAL_AT")
    for _ in [w for w in (wanted or "").split(",") if w == phase.name]:  # twice: a second signal
        import signal

        os.kill(os.getpid(), signal.SIGINT)


ABORT_GRACE_SECONDS = 1.0  # after a second signal, how long a native call may hold the exit


class StopOnSignal:
    """SIGINT/SIGTERM ask the run to stop at its next safe point (after the current step, or
    between the phases before the first step and after the last: pixgen.phases); a second
    one aborts at once: Aborted in Python code, and, should the main thread be stuck in a native
    call (where Python's handler cannot run), a watcher thread that sees the signals through
    `signal.set_wakeup_fd` ends the process (exit code 130) after ABORT_GRACE_SECONDS."""

    def __init__(self):
        self.requested = False
        self.watch = None  # (reading socket, writing socket, previous wakeup fd)

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame):
        from pixgen.errors import Aborted

        if self.requested:
            print("\npixgen: aborting", file=sys.stderr)
            raise Aborted
        self.requested = True
        print("\npixgen: stopping at the next safe point, keeping what is done (again to abort)...", file=sys.stderr)

    def _watcher(self, reader) -> None:
        import os
        import signal
        import time

        seen = 0
        with reader:
            while seen < 2:
                try:
                    data = reader.recv(64)
                except OSError:
                    return
                if not data:
                    return
                # one byte per signal, its number: other signals with Python handlers (SIGCHLD...) don't count
                seen += sum(1 for b in data if b in (signal.SIGINT, signal.SIGTERM))
        time.sleep(ABORT_GRACE_SECONDS)
        if self.watch is not None:  # still running: the main thread did not get out
            os._exit(130)

    def __enter__(self):
        import signal
        import socket
        import threading

        self.saved = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        try:
            previous = signal.set_wakeup_fd(writer.fileno())
        except ValueError:  # not the main thread: no watcher
            reader.close(), writer.close()
            return self
        self.watch = (reader, writer, previous)
        threading.Thread(target=self._watcher, args=(reader,), name="pixgen-abort", daemon=True).start()
        return self

    def __exit__(self, *exc):
        import signal
        import socket

        for s, h in self.saved.items():
            signal.signal(s, h)
        if self.watch is not None:
            reader, writer, previous = self.watch
            self.watch = None
            signal.set_wakeup_fd(previous)
            try:
                reader.shutdown(socket.SHUT_RDWR)  # wakes the watcher, which returns
            except OSError:  # the watcher saw two signals and closed it already
                pass
            writer.close()
