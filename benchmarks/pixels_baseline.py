"""Record (or check) the bytes of the images of a fixed set of commands, one per drawer and start.

    python benchmarks/pixels_baseline.py record pixels.json   # at the commit before a refactor
    python benchmarks/pixels_baseline.py check pixels.json    # after it: every image byte-identical

Each command runs through the CLI on the shipped shapes models (or the tiny ones), one thread,
a fixed seed, in its own output folder; every PNG it writes (final, frames, cells) is hashed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = ["--vqgan", "shapes", "--clip", "shapes", "-s", "64x64", "--threads", "1", "--seed", "3", "--no-gif"]
P = "a red circle on a blue background"
CASES = {
    "vqgan-tokens": ["generate", P, *SHAPES, "-i", "6", "--save-every", "3"],
    "vqgan-prior-preset": ["generate", P, "--preset", "shapes", "--threads", "1", "--seed", "2", "--no-gif"],
    "vqgan-composed": ["generate", P, *SHAPES, "--init", "composed", "-i", "4"],
    "vqgan-draws-progressive": ["generate", P, *SHAPES, "--init-draws", "3", "--schedule", "progressive", "-i", "6"],
    "vqgan-perlin-zoom": [
        "generate",
        P,
        *SHAPES,
        "--init-noise",
        "perlin",
        "--zoom-scale",
        "1.1",
        "--zoom-every",
        "2",
        "-i",
        "5",
    ],
    "vqgan-tile-ema": ["generate", P, *SHAPES, "--tile", "--ema", "0.5", "--tv-weight", "0.5", "-i", "4"],
    "pixel": ["generate", P, *SHAPES, "--drawer", "pixel", "--palette", "gameboy", "-i", "5"],
    "pixel-composed": ["generate", P, *SHAPES, "--drawer", "pixel", "--init", "composed", "-i", "3"],
    "fft": ["generate", P, *SHAPES, "--drawer", "fft", "-i", "5", "--init-noise", "gradient"],
    "lines-tile": ["generate", P, *SHAPES, "--drawer", "lines", "--tile", "--strokes", "8", "-i", "4"],
    "story-symmetry": [
        "generate",
        "a red circle on a blue background ^ a green box on a white background",
        *SHAPES,
        "-i",
        "6",
        "--symmetry",
        "both",
        "--symmetry-weight",
        "0.3",
    ],
    "sample": [
        "sample",
        P,
        "--preset",
        "shapes",
        "--threads",
        "1",
        "--seed",
        "5",
        "--prior-samples",
        "6",
        "--keep",
        "2",
    ],
}


def run_case(name: str, argv: list[str], out: Path) -> dict[str, str]:
    folder = out / name
    folder.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pixgen", *argv, "-o", str(folder), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    return {str(p.relative_to(folder).as_posix().split("/", 1)[-1]): pixels(p) for p in sorted(folder.rglob("*.png"))}


def pixels(path: Path) -> str:
    """The hash of an image's pixels (its metadata names the output folder, which differs)."""
    from PIL import Image

    with Image.open(path) as image:
        return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


def main() -> None:
    mode, path = sys.argv[1], Path(sys.argv[2])
    only = sys.argv[3:] or list(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        got = {name: run_case(name, CASES[name], Path(tmp)) for name in only}
    if mode == "record":
        path.write_text(json.dumps(got, indent=1, sort_keys=True))
        for name, files in got.items():
            print(name, "ERROR " + files["error"] if "error" in files else f"{len(files)} images")
        return
    want = json.loads(path.read_text())
    bad = 0
    for name in only:
        same = got[name] == want[name]
        bad += not same
        print(("same  " if same else "DIFFERS ") + name, "" if same else json.dumps(got[name])[:300])
    print(f"{len(only) - bad} same, {bad} differ")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
