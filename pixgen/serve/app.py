"""The Starlette app of `pixgen serve`: the page, the JSON API, server-sent progress and the files
of the output folder (and nothing outside it).

Every error is a JSON object {"error": "..."} with a 4xx status; nothing a request sends can
stop the server or its jobs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.routing import Route

from pixgen.errors import PixgenError
from pixgen.serve import modes
from pixgen.serve.form import drawer_defaults, form_schema, server_settings
from pixgen.serve.history import read_runs, to_json
from pixgen.serve.jobs import FINISHED, JobQueue, Limits, QueueFull

log = logging.getLogger("pixgen")

PAGE = Path(__file__).resolve().parent / "page.html"
MAX_JOB_BYTES = 256 * 1024  # a job request's JSON
MAX_JOB_DEPTH = 8  # nested lists and objects in a job request (a setting's value is at most a list)
MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # an uploaded image file (its pixels are capped by pixgen.outputs.images)
UPLOADS = ".uploads"  # inside the output folder
TOKEN_COOKIE = "pixgen_token"
FAVICON = (  # a 2x2 of the studio's colours
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 2 2"><rect width="1" height="1" fill="#3b5bdb"/>'
    '<rect x="1" width="1" height="1" fill="#e03131"/><rect y="1" width="1" height="1" fill="#f59f00"/>'
    '<rect x="1" y="1" width="1" height="1" fill="#23233a"/></svg>'
)


class JSONResponse(StarletteJSONResponse):
    """Starlette's JSONResponse (which raises on NaN, a 500) with non-finite numbers as null."""

    def render(self, content) -> bytes:
        return to_json(content).encode("utf-8")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def host_name(header: str) -> str:
    """The host of a Host header, without its port: "[::1]:7860" -> "[::1]", "localhost:80" -> "localhost"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1] if "]" in header else header
    return header.split(":", 1)[0]


class HostGuard:
    """ASGI middleware: only requests whose Host header names one of `allowed` (a loopback
    server's own names, against DNS rebinding) get through; others get a JSON 400."""

    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if host_name(headers.get("host", "")) not in self.allowed:
                return await error(400, "invalid Host header (this server answers to its loopback names only)")(
                    scope, receive, send
                )
        return await self.app(scope, receive, send)


class TokenGuard:
    """ASGI middleware: with a token, every request carries it (Authorization: Bearer, ?token= or
    the cookie the page sets); without one, nothing is asked. Requests that change something must
    not come from another site's page (Origin differs from Host: 403)."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD") and origin and urlsplit(origin).netloc != headers.get("host"):
            return await error(403, "cross-site request refused")(scope, receive, send)
        if self.token:
            given = self._given(scope, headers)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                return await error(401, "this server needs its token (Authorization: Bearer TOKEN)")(
                    scope, receive, send
                )
        return await self.app(scope, receive, send)

    def _given(self, scope, headers) -> str | None:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0]
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE:
                return value
        return None


def nesting(value, most: int) -> int:
    """How deep lists and objects nest in `value` (a scalar: 0), counted without recursion and
    only up to `most` + 1, so that any depth is measured in bounded time and stack."""
    deepest, level = 0, [(value, 0)]
    while level:
        item, depth = level.pop()
        if isinstance(item, dict | list) and depth <= most:
            deepest = max(deepest, depth + 1)
            level.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_job(body: bytes):
    """A job request's JSON, or a PixgenError: not JSON, or nested deeper than MAX_JOB_DEPTH
    (the JSON decoder recurses, so 100,000 `[` in a body under the size limit would raise
    RecursionError, a 500)."""
    deep = f"the body nests lists or objects too deeply (at most {MAX_JOB_DEPTH} levels)"
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise PixgenError("the body must be a JSON object of setting: value") from None
    except RecursionError:
        raise PixgenError(deep) from None
    if nesting(data, MAX_JOB_DEPTH) > MAX_JOB_DEPTH:
        raise PixgenError(deep)
    return data


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 once it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def under(root: Path, rel: str) -> Path | None:
    """The file `rel` inside `root`, or None (outside it, missing, or not a file)."""
    base = root.resolve()
    try:
        path = (base / rel).resolve()
    except (OSError, ValueError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


class Studio:
    """The route handlers over one JobQueue (its models loaded) and its output folder."""

    def __init__(self, queue: JobQueue, preset: str | None, token: str | None, info: dict | None, limits: Limits):
        self.queue, self.root, self.preset, self.token = queue, queue.root, preset, token
        self.schema = form_schema(server_settings(preset, str(queue.root)), queue.root)
        for entry in self.schema:  # the form shows the server's own limits where they are lower
            hi = {"iterations": limits.max_steps, "size": limits.max_size}.get(entry["name"])
            if hi is not None:
                entry["hi"] = min(entry["hi"], hi)
        self.info, self.limits = info or {}, limits
        self.drawer_defaults = drawer_defaults(preset, queue.root)

    def job(self, request: Request):
        job = self.queue.get(request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, f"no job {request.path_params['job_id']!r}")
        return job

    async def page(self, request: Request):
        response = HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})
        if self.token and request.query_params.get("token"):  # the guard checked it: keep it for img/SSE
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
        return response

    async def form(self, request: Request):
        return JSONResponse(
            {
                "fields": self.schema,
                "preset": self.preset,
                "info": self.info,
                "modes": modes.MODES,
                "drawer_defaults": self.drawer_defaults,
            }
        )

    async def submit(self, request: Request):
        """A job, or a sample, a sweep or the variations of an image (pixgen.serve.modes), every one
        checked before any is queued: 202 with the first's snapshot (and all of them, `jobs`)."""
        body = await read_body(request, MAX_JOB_BYTES)
        try:
            data = parse_job(body)
            planned = await asyncio.to_thread(modes.plan, data, self.preset, self.root, self.queue.models, self.limits)
            if len(self.queue.pending) + len(planned) > self.queue.max_queued:
                raise QueueFull(f"{len(self.queue.pending)} jobs are waiting already; try again later")
            jobs = [self.queue.submit(*each) for each in planned]
        except QueueFull as e:
            return error(429, str(e))
        except PixgenError as e:
            return JSONResponse({"error": str(e), "key": modes.error_key(str(e))}, status_code=400)
        snaps = [self.queue.snapshot(job) for job in jobs]
        return JSONResponse(
            dict(snaps[0], jobs=snaps), status_code=202, headers={"Location": f"/api/jobs/{jobs[0].id}"}
        )

    async def check(self, request: Request):
        """What POST /api/jobs would say of this request, without queueing it: {"ok": true} with the
        prompt's regions and the image's size (the preview draws the boxes), or the 400 it would get
        (with the setting it names, `key`). The form asks it before it submits."""
        body = await read_body(request, MAX_JOB_BYTES)
        try:
            data = parse_job(body)
            jobs = await asyncio.to_thread(modes.plan, data, self.preset, self.root, self.queue.models, self.limits)
        except PixgenError as e:
            return JSONResponse({"error": str(e), "key": modes.error_key(str(e))}, status_code=400)
        return JSONResponse({"ok": True, **modes.regions_of(jobs[0][0])} if jobs else {"ok": True})

    async def png_info(self, request: Request):
        """The settings of a dropped PNG, as the form shows them, and where it is kept (for vary)."""
        body = await read_body(request, MAX_UPLOAD_BYTES)
        try:
            return JSONResponse(await asyncio.to_thread(modes.png_form, body, self.root, UPLOADS))
        except PixgenError as e:
            return error(400, str(e))

    async def delete(self, request: Request):
        """Remove a run folder of the output folder (the page asks for a confirmation first)."""
        busy = {j.run_dir.name for j in self.queue.active() if j.run_dir is not None}
        try:
            await asyncio.to_thread(modes.delete_run, self.root, request.path_params["run"], busy)
        except PixgenError as e:
            return error(404 if "no run" in str(e) else 409, str(e))
        return JSONResponse({"deleted": request.path_params["run"]})

    async def favicon(self, request: Request):
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    async def jobs(self, request: Request):
        return JSONResponse({"jobs": [self.queue.snapshot(j) for j in self.queue.active()]})

    async def status(self, request: Request):
        return JSONResponse(self.queue.snapshot(self.job(request)))

    async def cancel(self, request: Request):
        job = self.job(request)
        self.queue.cancel(job)
        return JSONResponse(self.queue.snapshot(job))

    async def preview(self, request: Request):
        job = self.job(request)
        if job.preview is None:
            return error(404, "no preview yet")
        return Response(job.preview, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def final(self, request: Request):
        job = self.job(request)
        path = job.run_dir / "final.png" if job.run_dir and job.state in FINISHED else None
        if path is None or not path.is_file():
            return error(409 if job.state not in FINISHED else 404, f"job {job.id} has no final image ({job.state})")
        return FileResponse(path, media_type="image/png")

    async def events(self, request: Request):
        """Server-sent events: a `progress` snapshot whenever the job moves, `end` when it is over.
        A client that goes away ends only its stream; the job goes on."""
        job, queue = self.job(request), self.queue

        async def stream():
            seen = -1
            while True:
                if job.version != seen:
                    seen = job.version
                    snap = queue.snapshot(job)
                    yield f"event: progress\ndata: {to_json(snap)}\n\n"
                    if snap["state"] in FINISHED:
                        yield "event: end\ndata: {}\n\n"
                        return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.05)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def runs(self, request: Request):
        return JSONResponse({"runs": await asyncio.to_thread(read_runs, self.root)})

    async def upload(self, request: Request):
        body = await read_body(request, MAX_UPLOAD_BYTES)
        if not body:
            return error(400, "empty upload: send the image file as the request body")
        try:
            rel = await asyncio.to_thread(save_upload, self.root, body)
        except PixgenError as e:
            return error(400, str(e))
        return JSONResponse({"path": rel, "url": f"/files/{rel}"}, status_code=201)

    async def files(self, request: Request):
        path = under(self.root, request.path_params["path"])
        if path is None:
            return error(404, "not found")
        return FileResponse(path)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page),
            Route("/api/form", self.form),
            Route("/api/jobs", self.submit, methods=["POST"]),
            Route("/api/jobs", self.jobs, methods=["GET"]),
            Route("/api/jobs/{job_id}", self.status),
            Route("/api/jobs/{job_id}/cancel", self.cancel, methods=["POST"]),
            Route("/api/jobs/{job_id}/events", self.events),
            Route("/api/jobs/{job_id}/preview.png", self.preview),
            Route("/api/jobs/{job_id}/final.png", self.final),
            Route("/api/runs", self.runs),
            Route("/api/runs/{run}", self.delete, methods=["DELETE"]),
            Route("/api/check", self.check, methods=["POST"]),
            Route("/api/pnginfo", self.png_info, methods=["POST"]),
            Route("/favicon.ico", self.favicon),
            Route("/api/uploads", self.upload, methods=["POST"]),
            Route("/files/{path:path}", self.files),
        ]


async def _http_error(request: Request, exc: HTTPException):
    return error(exc.status_code, str(exc.detail))


async def _server_error(request: Request, exc: Exception):
    log.exception("request %s %s failed", request.method, request.url.path)
    return error(500, f"internal error: {type(exc).__name__}")


def create_app(
    queue: JobQueue,
    preset: str | None,
    token: str | None = None,
    allowed_hosts: list[str] | None = None,
    info: dict | None = None,
    limits: Limits | None = None,
    close_timeout: float = 60.0,
) -> Starlette:
    """The app over a started JobQueue (its models loaded). `token`: every request must carry it.
    `allowed_hosts`: the Host headers accepted (a loopback server refuses other names, against
    DNS rebinding). `limits`: the steps and size a job may ask for (default Limits(); the queue
    holds its own maximum). Shutting the app down stops the queue, waiting up to `close_timeout`
    seconds for the running job to keep what it has."""

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(queue.close, close_timeout)

    middleware = [Middleware(TokenGuard, token=token)]
    if allowed_hosts:
        middleware.insert(0, Middleware(HostGuard, allowed=allowed_hosts))
    return Starlette(
        routes=Studio(queue, preset, token, info, limits or Limits()).routes(),
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )


def save_upload(root: Path, data: bytes) -> str:
    """Check an uploaded image like the CLI's files (pixgen.outputs.images.open_rgb: size caps,
    decompression bombs) and keep it as a PNG in the output folder; its path relative to it."""
    from pixgen.outputs.images import open_rgb

    folder = root / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:20]
    fd, name = tempfile.mkstemp(dir=folder, prefix=".", suffix=".upload")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        image = open_rgb(tmp)
    except PixgenError as e:
        raise PixgenError(str(e).replace(str(tmp), "the upload")) from None
    finally:
        tmp.unlink(missing_ok=True)
    path = folder / f"{digest}.png"
    if not path.is_file():
        from pixgen.files import atomic_write

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        atomic_write(path, buf.getvalue())
    return f"{UPLOADS}/{path.name}"
