"""Work before the first step never depends on the size of a setting: every numeric setting at
its largest allowed value reaches its first step within seconds and about 1 GB, or is refused
in one line. Per-step tables are computed on demand (the learning-rate schedule, the drawn starts)."""

from __future__ import annotations

import resource
import time

import pytest
import torch

from pixgen import api
from pixgen.drawers.vqgan import VQGANDrawer, init_latent
from pixgen.errors import PixgenError
from pixgen.loop.optimise import LR_SCHEDULES, lr_factor, lr_schedule
from pixgen.models.vqgan import tiny_decoder
from pixgen.settings import FIELDS, load_settings
from pixgen.starts.candidates import Draws
from tests.conftest import StopAfter

NUMERIC = [k for k, f in FIELDS.items() if str(f.type).split(" ")[0] in ("int", "float", "list[int]")]
FIRST_STEP_SECONDS = 30.0  # idle, the slowest (32 init draws) takes about 8 s on two cores; they are shared
MEMORY_BYTES = 2**30


def _largest(key: str):
    meta, kind = FIELDS[key].metadata, str(FIELDS[key].type)
    hi = meta["hi"]
    if hi is None:
        assert not kind.startswith(("int", "list")), f"{key}: a count with no upper bound"
        return 1e30  # a weight or a scale: no bound needed, only a large value
    if kind.startswith("list"):
        return [int(hi), int(hi)]
    if meta["open_hi"]:
        return hi - 1e-6
    return int(hi) if kind.startswith("int") else float(hi)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_every_count_has_an_upper_bound():
    assert {"iterations", "cutn", "init_draws", "save_every", "video_every", "change_prompt_every"} <= set(NUMERIC)
    for key in NUMERIC:
        _largest(key)


@pytest.mark.parametrize("key", NUMERIC)
def test_each_numeric_setting_at_its_largest_starts_fast_or_is_refused(tmp_path, monkeypatch, key):
    monkeypatch.setattr(api, "available_bytes", lambda device: MEMORY_BYTES)  # a machine with 1 GiB free
    overrides = {"prompt": "a cat", "output_dir": str(tmp_path), key: _largest(key)}
    threads, stop, first = torch.get_num_threads(), StopAfter(1), []
    before, t0 = _peak_rss(), time.perf_counter()

    def on_step(step, total):
        first.append(time.perf_counter() - t0)
        stop.on_step(step, total)

    try:
        api.generate(load_settings("smoke", overrides=overrides), hooks=api.Hooks(on_step=on_step, should_stop=stop))
    except api.Interrupted:
        pass
    except PixgenError as e:  # refused: one line that names the setting or what to change
        assert "\n" not in str(e) and first == [], str(e)
        return
    finally:
        torch.set_num_threads(threads)
    assert first and first[0] < FIRST_STEP_SECONDS, (key, first)
    assert _peak_rss() - before < MEMORY_BYTES, key


@pytest.mark.parametrize("name", sorted(LR_SCHEDULES))
def test_the_lr_schedule_is_computed_on_demand_with_the_same_factors(name):
    schedule = lr_schedule(name, 40)
    assert [schedule[s] for s in range(40)] == [lr_factor(name, s, 40) for s in range(40)]
    assert schedule[10_000] == lr_factor(name, 39, 40)  # past the end: the last one
    huge = lr_schedule(name, 1_000_000_000)  # nothing per step is built
    assert huge[999_999_999] == lr_factor(name, 999_999_999, 1_000_000_000)


def test_draws_are_the_eager_draws_held_one_at_a_time():
    decoder = tiny_decoder()
    g, h = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    first = init_latent(decoder, 64, 64, g)
    draws = Draws(VQGANDrawer(decoder, size=(64, 64)), g, 4, first)
    eager = [init_latent(decoder, 64, 64, h) for _ in range(5)]
    assert len(draws) == 5 and all(torch.equal(draws[i], eager[i]) for i in range(5))
    assert torch.equal(g.get_state(), h.get_state())  # the generator moved on as the draws did
    with pytest.raises(IndexError):
        draws[5]
