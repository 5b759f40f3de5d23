"""A stop (Ctrl-C, SIGTERM, a cancel) is honoured in every phase of a run, not only between
steps: loading the models, encoding the prompts, composing or drawing the start, writing the
outputs. Real signals through the CLI's handler (pixgen.cli.console.StopOnSignal), delivered in-process
at the phase a test chooses (through Hooks.on_phase, which hears each phase as it begins), and once
through a real `pixgen` process. Tests name phases (pixgen.phases.Phase), never message texts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pixgen import api
from pixgen.cli.console import ABORT_GRACE_SECONDS, StopOnSignal
from pixgen.errors import Aborted
from pixgen.phases import Hooks, Phase
from pixgen.settings import load_settings
from tests.conftest import SMOKE


def _settings(tmp_path, **kw):
    base = dict(prompt="a red house", seed=3, iterations=4, save_every=2, output_dir=str(tmp_path))
    return load_settings(preset="smoke", overrides=dict(base, **kw))


def _signal_at(wanted: Phase, heard: list[Phase], times: int = 1):
    """An on_phase that records each phase and sends this process SIGINT `times` times when
    `wanted` begins."""

    def on_phase(phase: Phase, text: str) -> None:
        heard.append(phase)
        if phase is wanted:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    return on_phase


def _generate(settings, phase: Phase, times: int = 1):
    """generate() under the CLI's signal handler with SIGINT at `phase`: (heard, steps, outcome)."""
    heard, steps = [], []
    with StopOnSignal() as stop:
        try:
            hooks = Hooks(_signal_at(phase, heard, times), lambda s, t: steps.append(s.i), stop)
            api.generate(settings, hooks=hooks)
            outcome = None
        except api.Interrupted as e:
            outcome = e
    return heard, steps, outcome


PRIOR = {"vqgan": "shapes", "clip": ["shapes"], "init": "prior", "prior_samples": 4}  # the shipped prior
BEFORE_THE_FIRST_STEP = [
    (Phase.LOADING_VQGAN, {}),
    (Phase.LOADING_CLIP, {}),
    (Phase.PROMPTS, {}),
    (Phase.DRAWING_STARTS, {"init_draws": 3}),
    (Phase.SCORING_STARTS, {"init_draws": 3}),
    (Phase.LOADING_ENCODER, {"init": "composed"}),
    (Phase.COMPOSING, {"init": "composed"}),
    (Phase.COMPOSING_COLOURS, {"init": "composed"}),
    (Phase.COMPOSING_THROUGH, {"init": "composed"}),
    (Phase.COMPOSING_SCORING, {"init": "composed"}),
    (Phase.LOADING_PRIOR, PRIOR),
    (Phase.PRIOR_DRAWING, PRIOR),
    (Phase.PRIOR_BATCH, dict(PRIOR, prior_samples=20)),  # between batches of 16
    (Phase.PRIOR_RANKING, PRIOR),
    (Phase.COMPOSING_SILHOUETTES, {"init": "composed", "init_silhouettes": ["disc", "box"]}),
    (Phase.LOADING_ENCODER, {"init_noise": "perlin"}),
    (Phase.ENCODING_START, {"init_noise": "perlin"}),
    (Phase.LOADING_ENCODER, {"zoom_scale": 1.1}),
]


@pytest.mark.parametrize(("phase", "extra"), BEFORE_THE_FIRST_STEP)
def test_a_stop_before_the_first_step_is_honoured_in_that_phase_and_keeps_nothing(tmp_path, phase, extra):
    heard, steps, outcome = _generate(_settings(tmp_path, **extra), phase)
    assert isinstance(outcome, api.Interrupted) and outcome.args[0] is None
    assert heard[-1] is phase, heard  # it stopped there: no later phase was begun
    assert steps == [] and list(tmp_path.iterdir()) == []  # no step, no (empty) run folder left


def test_a_stop_while_writing_keeps_the_image_and_skips_the_renders(tmp_path):
    heard, steps, outcome = _generate(_settings(tmp_path), Phase.WRITING_GIF)
    result = outcome.args[0]
    assert steps == [1, 2, 3, 4] and result.interrupted is False and result.skipped == ["progress.gif"]
    (run,) = tmp_path.iterdir()
    assert (run / "final.png").is_file() and not (run / "progress.gif").exists()
    record = json.loads((run / "run.json").read_text())
    assert record["steps_done"] == 4 and record["skipped"] == ["progress.gif"]


def test_a_stop_during_the_steps_still_writes_every_output(tmp_path):
    """As before: the first Ctrl-C during the steps keeps the GIF too (nothing is skipped)."""
    stop = StopOnSignal()
    with stop:

        def on_step(step, total):
            if step.i == 2:
                os.kill(os.getpid(), signal.SIGINT)

        with pytest.raises(api.Interrupted) as e:
            api.generate(_settings(tmp_path), hooks=Hooks(on_step=on_step, should_stop=stop))
    result = e.value.args[0]
    assert result.interrupted and result.skipped == [] and (result.run_dir / "progress.gif").is_file()


def test_a_second_signal_aborts_at_once(tmp_path):
    with pytest.raises(Aborted):
        with StopOnSignal() as stop:
            hooks = Hooks(_signal_at(Phase.LOADING_CLIP, [], times=2), should_stop=stop)
            api.generate(_settings(tmp_path), hooks=hooks)
    time.sleep(ABORT_GRACE_SECONDS + 0.5)  # the watcher was stood down on the way out: still alive


def test_cli_stops_in_a_phase_on_a_real_sigint_and_exits_130(tmp_path):
    env = dict(os.environ, PIXGEN_TEST_SIGNAL_AT="PROMPTS")
    cmd = [sys.executable, "-m", "pixgen", "a cat", *SMOKE, "-o", str(tmp_path / "o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert "before the first step" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
    env["PIXGEN_TEST_SIGNAL_AT"] = "LOADING_CLIP,LOADING_CLIP"  # a second signal: out at once
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 130 and "aborting" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_second_signal_ends_a_process_stuck_outside_python():
    """The main thread cannot run Python's handler (here: inside a long native call, a 30 s sleep
    with SIGINT and SIGTERM blocked, when both signals arrive from another thread); the watcher
    still ends the process, with 130, soon after the second signal. (The signals used to be sent
    by the main thread itself between statements, where it could run the handler first: a race.)"""
    code = (
        "import os, signal, threading, time\n"
        "from pixgen.cli.console import StopOnSignal\n"
        "def send():\n"
        "    time.sleep(0.3); os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2); os.kill(os.getpid(), signal.SIGTERM)\n"
        "with StopOnSignal():\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})\n"
        "    threading.Thread(target=send, daemon=True).start()  # inherits the mask: the watcher gets them\n"
        "    time.sleep(30)\n"
        "print('still here')\n"
    )
    t0 = time.monotonic()
    proc = _python(code)
    assert proc.returncode == 130 and "still here" not in proc.stdout and time.monotonic() - t0 < 20


def test_other_signals_never_count_as_a_second_stop():
    code = (
        "import os, signal, time\n"
        "from pixgen.cli.console import StopOnSignal\n"
        "signal.signal(signal.SIGUSR1, lambda *a: None)  # e.g. a child watcher's SIGCHLD\n"
        "with StopOnSignal() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    for _ in range(3): os.kill(os.getpid(), signal.SIGUSR1)\n"
        "    time.sleep(2)\n"
        "print('alive', stop.requested)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0 and "alive True" in proc.stdout, proc.stderr


def test_prior_sampling_hears_every_token_and_a_stop_ends_it_within_the_batch():
    """The largest prior draws a batch for minutes: its callback hears each token (a safe point)."""
    import torch

    from pixgen.prior.model import Prior, PriorArch, sample

    arch = PriorArch(vocab_size=16, block_size=6, n_layer=1, n_head=2, n_embd=16, n_codes=16, grid=(2, 3))
    prior, heard = Prior(arch).eval(), []

    def callback(info: dict) -> None:
        heard.append((info["done"], info["token"]))
        if info["done"] == 4 and info["token"] == 3:
            raise api.Interrupted(None)

    with pytest.raises(api.Interrupted):
        sample(prior, None, 10, torch.Generator().manual_seed(0), batch=4, callback=callback)
    assert heard[:7] == [
        (0, 0),
        (0, 2),
        (0, 3),
        (0, 4),
        (0, 5),
        (0, 6),
        (4, 0),
    ]  # unconditional: token 1 is drawn uniform
    assert heard[-1] == (4, 3)  # stopped inside the second batch, three tokens in
