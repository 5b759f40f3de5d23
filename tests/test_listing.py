"""List commands: names never broken, plain columns when piped, --json everywhere (issue 23)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from pixgen.cli.console import rich_table
from pixgen.models.cache import vqgan_rows

VQGAN_HEADERS = ["name", "also", "kind", "size", "cached", "licence"]


def _piped(*args, tmp_path):
    env = dict(os.environ, COLUMNS="80", PIXGEN_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "pixgen", *args]  # stdout is a pipe: what `| grep` sees
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _grep(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_piped_models_list_is_plain_columns_that_grep_finds(tmp_path):
    out = _piped("models", "list", tmp_path=tmp_path)
    assert "│" not in out and "┃" not in out  # no table drawing when piped
    (line,) = _grep(out, "vqgan_imagenet_f16_16384")
    assert line.split("\t")[:2] == ["vqgan_imagenet_f16_16384", "imagenet_f16_16384"]
    (line,) = _grep(out, "imagenet_f16_16384\t")  # the alias, whole, in its own column
    assert line.startswith("vqgan_imagenet_f16_16384\t")
    assert out.splitlines()[0].split("\t") == VQGAN_HEADERS
    assert all(len(line.split("\t")) == 6 for line in out.splitlines())


@pytest.mark.parametrize("width", [80, 60, 40])
def test_a_narrow_terminal_drops_columns_rather_than_break_a_name(width):
    rows = [list(r) for r in vqgan_rows()]
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=True, color_system=None).print(
        rich_table(VQGAN_HEADERS, rows, optional=(5, 3, 2, 4, 1), width=width)
    )
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= width
    for row in rows:  # every name (and, while its column stays, every alias) on one line, whole
        assert _grep(buf.getvalue(), row[0])
        for alias in filter(None, row[1].split(", ")):
            assert _grep(buf.getvalue(), alias) or "also" not in lines[1]
    assert "name" in lines[1] and ("licence" in lines[1]) is (width >= 120)


def test_a_word_wider_than_the_terminal_folds_whole():
    path = "/data/" + "a_rather_long_folder_name_" * 3 + "/image.png"
    buf = io.StringIO()
    Console(file=buf, width=50, force_terminal=True, color_system=None).print(
        rich_table(["image", "a red circle"], [[path, "0.1234"]], width=50)
    )
    out = buf.getvalue()
    assert max(len(line) for line in out.splitlines()) <= 50
    first_column = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert path in "".join(first_column) and "…" not in out


@pytest.mark.parametrize(
    "args, key",
    [(("models", "list"), "also"), (("models", "list", "--clip"), "cached"), (("presets",), "description")],
)
def test_list_commands_print_json(cli, tmp_path, monkeypatch, args, key):
    monkeypatch.setenv("PIXGEN_CACHE", str(tmp_path / "cache"))
    code, out, _ = cli(*args, "--json")
    assert code == 0
    items = json.loads(out)
    assert items and all(key in item and "name" in item for item in items)
    names = {item["name"] for item in items}
    assert {"vqgan_imagenet_f16_16384", "ViT-B-32:openai", "smoke"} & names
    if args == ("models", "list"):
        (imagenet,) = [i for i in items if i["name"] == "vqgan_imagenet_f16_16384"]
        assert imagenet["also"] == ["imagenet_f16_16384"] and imagenet["cached"] == "no"


def test_piped_presets_and_clip_list_are_tab_separated(cli):
    code, out, _ = cli("presets")
    assert code == 0 and out.splitlines()[0] == "preset\tdescription"
    assert any(line.startswith("smoke\t") for line in out.splitlines())


def test_piped_clip_list_is_plain_columns_that_grep_finds(tmp_path):
    out = _piped("models", "list", "--clip", tmp_path=tmp_path)
    assert "│" not in out and "┃" not in out  # no table drawing when piped
    lines = out.splitlines()
    assert lines[0].split("\t") == ["CLIP (use as NAME:TAG)", "cached"]
    assert all(len(line.split("\t")) == 2 for line in lines)
    assert _grep(out, "ViT-B-32:openai\t") == ["ViT-B-32:openai\tno"]  # whole, in its own column; cache empty
    assert "shapes\tships" in lines and "tiny\tbuilt in (random)" in lines
