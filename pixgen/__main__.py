"""`python -m pixgen` and the `pixgen` console script. It first starts itself again with tcmalloc
preloaded where that is installed (pixgen.allocator). A first Ctrl-C or SIGTERM is caught from
here on, before the heavy imports (typer, the settings, torch), so that a stop while pixgen starts
exits 130 with its usual line, not 143 with none; a run installs its own handler
(pixgen.cli.signals.StopOnSignal) once it begins. Once the command has returned, a Ctrl-C or
SIGTERM ends the process at once with the command's exit code while Python waits for threads and
runs its exit functions, and is ignored after them (while the interpreter tears down, Python has
put back the default handler: the signal killed pixgen, -2, half a second after its last line)."""

import atexit
import os
import signal
import sys

from pixgen.errors import PixgenError, StoppedEarly


def _stop(signum, frame):
    raise StoppedEarly


def _on_stop(handler) -> None:
    """Handle Ctrl-C and SIGTERM with `handler` (a function, or signal.SIG_IGN)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def main() -> int:
    from pixgen.allocator import restart_with_allocator

    try:
        restart_with_allocator()  # once, with tcmalloc preloaded where it is installed (pixgen.allocator)
    except PixgenError as e:
        print(f"pixgen: error: {e}", file=sys.stderr)
        return e.exit_code

    _on_stop(_stop)
    atexit.register(_on_stop, signal.SIG_IGN)  # registered first: it runs after every other exit function
    try:
        from pixgen.cli.app import main as cli_main
    except KeyboardInterrupt:  # pixgen.cli.console may be half-imported: its line, written here
        print(f"pixgen: interrupted {StoppedEarly.where}", file=sys.stderr)
        return 130
    code = cli_main()
    _on_stop(lambda signum, frame: _leave(code))
    return code


def _leave(code: int) -> None:
    """End the process now, with `code` (a signal once the command has returned)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
