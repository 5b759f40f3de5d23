"""pixgen for Ray Data: `Generate`, a callable class for `Dataset.map_batches`.

    import ray
    from pixgen.ray import Generate

    ds = ray.data.from_items([{"prompt": "a red house", "seed": 1}, {"prompt": "a blue lake", "seed": 2}])
    images = ds.map_batches(Generate, fn_constructor_kwargs={"preset": "shapes"},
                            concurrency=2, num_gpus=1, batch_size=1)

Each actor loads the models once (per distinct set of model settings) and runs the rows one after
another through pixgen.api.generate, as `pixgen generate` would. Ray itself is not imported here."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import uuid
from pathlib import Path

COLUMNS = ("prompt", "seed", "png", "settings", "error")


class Generate:
    """Rows of `prompt`, optional `seed` (None or NaN: drawn) and optional `settings` (a dict or its
    JSON: any setting, as `--set` takes them) in; the same rows out with `png` (final.png's bytes,
    which carry their settings as every pixgen PNG does), `settings` (the run's resolved settings,
    JSON) and `error` ("" or the one line that failed that row alone, whose png is then empty).

    The constructor's `preset`, `config` (a YAML file) and `overrides` are every row's defaults;
    `threads` sets torch's CPU threads."""

    def __init__(self, preset: str | None = None, config: str | None = None, overrides=None, threads=None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.preset, self.config, self.overrides = preset, config, dict(overrides or {})
        self.loaded: dict[tuple, object] = {}
        self.scratch = Path(tempfile.mkdtemp(prefix="pixgen-data-"))

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        prompts = [str(p) for p in batch["prompt"]]
        seeds = list(batch["seed"]) if "seed" in batch else [None] * len(prompts)
        extras = list(batch["settings"]) if "settings" in batch else [None] * len(prompts)
        rows = [self.row(p, s, e) for p, s, e in zip(prompts, seeds, extras, strict=True)]
        return {key: np.array([row[key] for row in rows], dtype=object) for key in COLUMNS}

    def row(self, prompt: str, seed, extra) -> dict:
        """One image: the row's settings over the defaults, the models loaded once, a run in a
        scratch folder that goes once its PNG is read."""
        from pixgen.api import generate
        from pixgen.apps.batch import load_job_models
        from pixgen.errors import PixgenError
        from pixgen.outputs.writer import read_run_record

        seed = _seed(seed)
        out = {"prompt": prompt, "seed": seed, "png": b"", "settings": "", "error": ""}
        run_dir = self.scratch / uuid.uuid4().hex
        try:
            settings = self.settings(prompt, seed, extra)
            result = generate(settings, models=load_job_models(settings, self.loaded, _hooks()), run_dir=run_dir)
            resolved = read_run_record(run_dir / "run.json")["settings"]
            out.update(seed=result.seed, png=result.image.read_bytes(), settings=json.dumps(resolved, default=str))
        except PixgenError as e:
            out["error"] = str(e)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        return out

    def settings(self, prompt: str, seed, extra):
        """The row's Settings: the defaults, then its own `settings`, then its prompt and seed."""
        from pixgen.errors import PixgenError
        from pixgen.needs import check_run
        from pixgen.settings import load_settings

        if isinstance(extra, str | bytes):
            try:
                extra = json.loads(extra) if extra else {}
            except json.JSONDecodeError as e:
                raise PixgenError(f"the row's settings are not valid JSON ({e.msg})") from None
        if extra is not None and not isinstance(extra, dict):
            raise PixgenError(f"the row's settings must be a mapping, not {type(extra).__name__}")
        row = {str(k).replace("-", "_"): v for k, v in (extra or {}).items()}
        row.update(prompt=prompt, **({} if seed is None else {"seed": seed}))
        settings = load_settings(self.preset, self.config, dict(self.overrides, **row))
        check_run(settings)
        return settings


def _seed(value) -> int | None:
    """A row's seed as an int, or None (missing, None or NaN, as a column with gaps holds it)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def _hooks():
    from pixgen.phases import Hooks

    return Hooks()
