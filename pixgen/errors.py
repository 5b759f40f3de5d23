"""pixgen's own exceptions, importable without torch, so the CLI catches them by type."""


class PixgenError(Exception):
    """A problem with the user's input or environment, shown as one line (exit code 2)."""

    exit_code = 2


class NumericalFailure(PixgenError):
    """The loss or the latent kept going non-finite despite rollbacks."""


class Interrupted(Exception):
    """A run stopped on request after saving its work; args[0] is the Result (exit code 130)."""


class Aborted(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM: leave at once, writing nothing more (exit code 130)."""


class StoppedEarly(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM before a run's own handler was in place (while pixgen starts): nothing
    was begun (exit code 130)."""

    where = "before a run began; nothing was written"
