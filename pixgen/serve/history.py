"""The studio's history: past runs in the output folder, from their run.json files, as /api/runs
lists them (a damaged one is left out, never the history), and JSON without NaN."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from pixgen.errors import PixgenError
from pixgen.outputs.writer import read_run_record
from pixgen.serve.form import SERVER_KEYS, to_form
from pixgen.serve.jobs import run_files
from pixgen.settings import FIELDS

log = logging.getLogger("pixgen")
HISTORY = 200  # runs listed by /api/runs


def finite(value):
    """`value` with every non-finite float (NaN, +-inf: a loss gone NaN, a hand-edited run.json)
    made None, in dicts and lists too: JSON has no NaN, and a browser's JSON.parse refuses it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def to_json(value) -> str:
    """JSON text of `value`, never NaN or Infinity (they become null)."""
    return json.dumps(finite(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def read_runs(root: Path, limit: int = HISTORY) -> list[dict]:
    """Past runs in the output folder, newest first, from their run.json (so a restart keeps them).
    A run.json that cannot be read or listed (damaged, hand-edited, NaN) leaves its run out, never
    the history: a bad folder never makes /api/runs fail."""
    found = []
    try:
        folders = list(root.iterdir()) if root.is_dir() else []
    except OSError:
        folders = []
    for d in folders:
        record = d / "run.json"
        try:
            if d.name.startswith(".") or not record.is_file():
                continue
            found.append((record.stat().st_mtime, d, record))
        except OSError:
            continue
    found.sort(key=lambda t: t[0], reverse=True)
    out = []
    for mtime, d, record in found[:limit]:
        try:
            entry = _run_entry(root, d, record, mtime)
            if entry is not None:
                to_json(entry)  # serialisable, or left out here rather than failing the response
                out.append(entry)
        except PixgenError as e:  # a damaged or foreign run.json (its schema): left out, never fatal
            log.warning("%s; left out of the history", e)
        except Exception as e:  # whatever else it holds: that run is left out, not the history
            log.debug("history: %s left out (%s: %s)", d.name, type(e).__name__, e)
    return out


def _run_entry(root: Path, d: Path, record: Path, mtime: float) -> dict | None:
    """A past run as /api/runs lists it, or None for one under way or killed before its image."""
    data = read_run_record(record)
    if data.get("finished") is False and not (d / "final.png").is_file():
        return None  # under way, or killed before its image (run.json is written at the start)
    if "settings" not in data:
        return None  # a job of candidates (pixgen batch): no one run to show
    settings = data["settings"]
    form = {k: to_form(k, v, root) for k, v in settings.items() if k in _form_keys()}
    rel, files = d.name, run_files(root, d)
    image = "final.png"
    if "kept" in data and not (d / "final.png").is_file():  # pixgen sample's: its best sample stands for it
        image = "sample-1.png"
        files["final"] = f"/files/{rel}/{image}"
    return finite(
        {
            "run": rel,
            "prompt": settings.get("prompt", ""),
            "seed": settings.get("seed"),
            "steps_done": data.get("steps_done"),
            "iterations": settings.get("iterations"),
            "interrupted": bool(data.get("interrupted")),
            "error": data.get("error"),
            "seconds": data.get("seconds"),
            "finished": mtime,
            "files": files,
            "init": f"{rel}/{image}",
            "form": form,
            "drawer": settings.get("drawer"),
            "kind": "sample" if "kept" in data else "vary" if settings.get("vary_strength") else "run",
        }
    )


def _form_keys() -> set[str]:
    return set(FIELDS) - set(SERVER_KEYS)
