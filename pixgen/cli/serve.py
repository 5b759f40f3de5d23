"""`pixgen serve`: the local web studio (pixgen.serve does the work; imported only when it runs)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from pixgen.cli import console
from pixgen.errors import PixgenError
from pixgen.serve.jobs import Limits
from pixgen.settings import MAX_SIDE, MAX_STEPS

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
STOP_SECONDS = 5.0  # on SIGTERM or Ctrl-C: the longest the running job is waited for


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one clear PixgenError (port in use, unknown host)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise PixgenError(f"cannot serve on host {host!r}: {e.strerror or e}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise PixgenError(f"port {port} on {host} is in use; choose another with --port") from None
        raise PixgenError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on; other than loopback needs a token.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=0, max=65535)] = 7860,
    preset: Annotated[
        str | None, typer.Option("--preset", help="The models and defaults of every job (see `pixgen presets`).")
    ] = None,
    output_dir: Annotated[
        str | None, typer.Option("-o", "--output-dir", help="Where runs go, and the history is read from.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Every request must carry it (generated and printed for a non-loopback host)."),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never touch the network; fail at once if a model is missing.")
    ] = False,
    max_steps: Annotated[
        int, typer.Option("--max-steps", help="The most steps a job may ask for.", min=1, max=MAX_STEPS)
    ] = Limits.max_steps,
    max_size: Annotated[
        int,
        typer.Option("--max-size", help="The longest image side a job may ask for, in pixels.", min=1, max=MAX_SIDE),
    ] = Limits.max_size,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="The most jobs waiting; more are refused (HTTP 429).", min=1, max=10_000)
    ] = Limits.max_queue,
):
    """A local web studio: a form, a live preview, a queue and a history, with the models kept in memory."""
    from pixgen.serve.form import server_settings

    base = server_settings(preset, output_dir)
    output_folder(base.output_dir)
    limits = {"max_steps": max_steps, "max_size": max_size, "max_queue": max_queue}
    if token is not None and not token.strip():
        raise PixgenError("--token must not be empty")
    if not is_loopback(host):
        if token is None:
            token = secrets.token_urlsafe(24)
        console.note(
            f"pixgen: warning: serving on {host}, reachable from other machines; every request needs the token"
        )
    run_server(base, preset, host, bind(host, port), token, offline, limits)


def output_folder(path: str) -> Path:
    """The output folder, made now (before the models load, minutes on a big preset), or one
    line saying why it cannot be: a file of that name, a parent that is a file, no permission."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise PixgenError(f"--output-dir {folder} is a file, not a folder; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PixgenError(f"cannot create the output folder {folder}: {e.strerror or e}") from None
    return folder


def build_app(queue, preset: str | None, host: str, token: str | None, info: dict | None = None, limits=None):
    """The app as `pixgen serve` sets it up for `host`: on a loopback host only its loopback
    names are accepted in the Host header (against DNS rebinding; IPv6's [::1] included)."""
    from pixgen.serve.app import create_app

    allowed = LOOPBACK_NAMES if is_loopback(host) else None
    return create_app(queue, preset, token, allowed, info, limits, close_timeout=STOP_SECONDS)


class QuietCancel(logging.Filter):
    """Leaves out uvicorn's tracebacks of the tasks a forced exit cancels (a second Ctrl-C or
    SIGTERM ends the lifespan and open streams, such as a job's events, mid-way): a stop, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError | KeyboardInterrupt)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def interrupts_heard(previous, heard: list):
    """A `sys.unraisablehook` for while serving: a KeyboardInterrupt that `_raise_interrupt` raised
    inside a callback Python cannot raise from (a weakref's, the import lock's: "Exception ignored
    in ...", a traceback) is noted in `heard` (a stop, not an error); anything else goes to `previous`."""

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            heard.append(unraisable.exc_value)
        else:
            previous(unraisable)

    return hook


def run_server(
    base, preset: str | None, host: str, sock: socket.socket, token: str | None, offline: bool, limits: dict
) -> None:
    """Load the models once, start the job queue and serve on `sock` until Ctrl-C or SIGTERM: the
    first stops the queue at once (the running job keeps what it has, as a CLI run does) and the
    server within a few seconds; a second one leaves without waiting for open connections."""
    try:
        import uvicorn

        from pixgen.serve.jobs import JobQueue, Limits, load_server_models
    except ImportError as e:
        sock.close()
        raise PixgenError(f"pixgen serve needs its extra: pip install 'pixgen[serve]' ({e})") from None
    root = Path(base.output_dir)
    console.note(f"pixgen: loading models ({base.vqgan}, {', '.join(base.clip)})…")
    try:
        queue = JobQueue(load_server_models(base, offline), root, limits["max_queue"]).start()
    except BaseException:
        sock.close()
        raise
    info = {"vqgan": base.vqgan, "clip": base.clip, "output_dir": str(root.resolve())}
    app = build_app(queue, preset, host, token, info, Limits(**limits))
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    # no lifespan: the queue is closed below, and a forced exit (a second signal) would cancel the
    # lifespan task, which uvicorn reports as a traceback in a plain message
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="off")
    server = uvicorn.Server(config)
    exit_on_signal = server.handle_exit

    def handle_exit(sig, frame):  # the job stops now, while the open connections drain
        queue.stop()
        exit_on_signal(sig, frame)

    server.handle_exit = handle_exit
    # what uvicorn re-raises once it has shut down (on SIGINT too: asyncio.run's own handler,
    # which it installs over Python's default one, would swallow it and exit 0)
    signalled, quiet, heard, unraisable = False, QuietCancel(), [], sys.unraisablehook
    logging.getLogger("uvicorn.error").addFilter(quiet)
    sys.unraisablehook = interrupts_heard(unraisable, heard)
    saved = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:  # "serving on" once a signal is the server's to handle (before, it met the start-up handler)
        console.note(f"pixgen: serving on {url}  (runs in {root}; Ctrl-C to stop)")
        if token:
            console.note(f"pixgen: token: {token}")
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C or SIGTERM it shut down on
        signalled = True
    finally:
        logging.getLogger("uvicorn.error").removeFilter(quiet)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        sys.unraisablehook = unraisable
        queue.close(STOP_SECONDS)
        sock.close()
    console.note("pixgen: server stopped")
    if signalled or heard:  # stopped by a signal: exit code 130, as a CLI run stopped by one
        raise typer.Exit(130)
