"""pixgen's own error type: one clear line for the user, and an exit code."""


class PixgenError(Exception):
    """A problem with the user's input or environment, shown as one line (exit code 2)."""

    exit_code = 2
