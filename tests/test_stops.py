"""Issue 28's stops: a batch hears a stop between its jobs whatever became of the last one; a
SIGTERM while pixgen starts exits 130 with its line; `pixgen serve` stopped by a signal exits
130, and a second signal prints no traceback; `serve -o FILE` is refused before the models load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from pixgen.apps.batch import STOPPED_BETWEEN_JOBS, run_batch
from pixgen.cli.console import interrupted
from pixgen.errors import Interrupted
from pixgen.phases import Hooks
from pixgen.settings import load_settings


def test_a_batch_stops_between_jobs_that_fail_on_their_settings(tmp_path, capsys):
    """SIGTERM during a batch whose jobs failed on their settings printed "stopping at the next
    safe point", then went on failing jobs for 9 minutes: the stop was only looked at while
    models loaded, and these jobs never load any."""
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"prompt": f"a cat {i}", "no_such_setting": 1}) + "\n" for i in range(50)))
    seen = []
    hooks = Hooks(should_stop=lambda: bool(seen))  # the stop comes while the first job is failing
    try:
        run_batch(
            jobs,
            tmp_path / "out",
            lambda job: load_settings(overrides=job),
            on_job=lambda r, n: seen.append(r),
            hooks=hooks,
        )
        stopped = None
    except Interrupted as e:
        stopped = e
    assert [r.status for r in seen] == ["failed"]  # one job, then the stop
    assert stopped is not None and stopped.args[0] == STOPPED_BETWEEN_JOBS
    assert interrupted(stopped) == 130
    assert "between jobs" in capsys.readouterr().err


# Sends this process SIGTERM when a module is first looked for: a stop in the middle of pixgen's
# imports, at a moment the test names, through `python -m pixgen` as a user runs it.
SIGTERM_AT_IMPORT = """
import os, runpy, signal, sys
WANT = sys.argv[1]
class Stop:
    def find_spec(self, name, path=None, target=None):
        if name == WANT:
            os.kill(os.getpid(), signal.SIGTERM)
        return None
sys.meta_path.insert(0, Stop())
sys.argv = ["pixgen", "a cat", "--preset", "smoke", "-o", sys.argv[2]]
runpy.run_module("pixgen", run_name="__main__", alter_sys=True)
"""


def test_sigterm_while_pixgen_imports_exits_130_with_its_line(tmp_path):
    """It exited 143 with no message: the handler came only with the run."""
    for module in ("typer", "omegaconf"):  # importing the CLI; reading the settings
        cmd = [sys.executable, "-c", SIGTERM_AT_IMPORT, module, str(tmp_path / "o")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 130, (module, proc.returncode, proc.stderr)
        assert "pixgen: interrupted" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def _serve(tmp_path, *signals: int, gap: float = 0.05) -> subprocess.CompletedProcess:
    """`pixgen serve --preset smoke` sent `signals` `gap` seconds apart once it serves, and its outcome."""
    cmd = [sys.executable, "-m", "pixgen", "serve", "--preset", "smoke", "--port", "0", "-o", str(tmp_path / "srv")]
    err = tmp_path / "serve.err"
    with open(err, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f)
    deadline = time.monotonic() + 120
    while "serving on" not in err.read_text() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(gap)
    proc.wait(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, "", err.read_text())


def test_serve_stopped_by_a_signal_exits_130_and_a_second_one_prints_no_traceback(tmp_path):
    """serve exited 0 where the CLI exits 130; a double Ctrl-C printed asyncio tracebacks."""
    proc = _serve(tmp_path, signal.SIGTERM)
    assert proc.returncode == 130 and "server stopped" in proc.stderr, proc.stderr
    # the second while the server drains, or once it has stopped and pixgen shuts down (that
    # one met the start-up handler again: a StoppedEarly traceback, or death by SIGINT, -2)
    for gap in (0.05, 0.3):
        proc = _serve(tmp_path, signal.SIGINT, signal.SIGINT, gap=gap)
        assert proc.returncode == 130, (gap, proc.stderr)
        assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, (gap, proc.stderr)


def test_an_interrupt_python_cannot_raise_while_serving_is_a_stop_not_a_traceback():
    """A second Ctrl-C that landed in the import lock's weakref callback printed "Exception ignored
    in ..." and a traceback (Python cannot raise from such a callback); it is a stop."""
    import weakref

    from pixgen.cli.serve import interrupts_heard

    class Thing:
        pass

    def interrupted(_):
        raise KeyboardInterrupt

    passed, heard, previous = [], [], sys.unraisablehook
    thing = Thing()
    ref = weakref.ref(thing, interrupted)
    sys.unraisablehook = interrupts_heard(passed.append, heard)
    try:
        del thing  # the callback raises where Python cannot: its unraisable hook hears it
        other = Thing()
        ref2 = weakref.ref(other, lambda _: 1 / 0)
        del other
    finally:
        sys.unraisablehook = previous
    assert ref() is None and ref2() is None
    assert [type(e) for e in heard] == [KeyboardInterrupt]
    assert [type(u.exc_value) for u in passed] == [ZeroDivisionError]  # other errors go on as before


def test_serve_refuses_an_output_file_before_loading_the_models(tmp_path, cli, monkeypatch):
    """-o FILE crashed after loading the models (minutes on a big preset)."""
    from pixgen.serve import jobs

    def load(*args, **kw):
        raise AssertionError("the models were loaded")

    monkeypatch.setattr(jobs, "load_server_models", load)
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder")
    code, _, err = cli("serve", "--preset", "smoke", "--port", "0", "-o", taken)
    assert code == 2 and err.count("\n") == 1 and "is a file" in err, err
    code, _, err = cli("serve", "--preset", "smoke", "--port", "0", "-o", taken / "below")
    assert code == 2 and err.count("\n") == 1 and "cannot create" in err, err
    assert taken.read_text() == "not a folder"
    assert os.path.isfile(taken)
