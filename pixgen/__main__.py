"""`python -m pixgen` and the `pixgen` console script. It first starts itself again with tcmalloc
preloaded where that is installed (pixgen.allocator). A first Ctrl-C or SIGTERM is caught from
here on, before the heavy imports (typer, the settings, torch), so that a stop while pixgen starts
exits 130 with its usual line, not 143 with none; a run installs its own handler
(pixgen.cli.signals.StopOnSignal) once it begins."""

import sys

from pixgen.errors import PixgenError, StoppedEarly


def _stop(signum, frame):
    raise StoppedEarly


def main() -> int:
    import signal

    from pixgen.allocator import restart_with_allocator

    try:
        restart_with_allocator()  # once, with tcmalloc preloaded where it is installed (pixgen.allocator)
    except PixgenError as e:
        print(f"pixgen: error: {e}", file=sys.stderr)
        return e.exit_code

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    try:
        from pixgen.cli.app import main as cli_main
    except KeyboardInterrupt:  # pixgen.cli.console may be half-imported: its line, written here
        print(f"pixgen: interrupted {StoppedEarly.where}", file=sys.stderr)
        return 130
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
