#!/usr/bin/env bash
# GPU check: installs nothing; run from the repository root with the project's .venv present.
# Runs the tests marked `gpu`, then the speed benchmark at 512x512 with 64 cutouts on CUDA in
# fp32, bf16, fp16, fp32 + torch.compile and fp32 + --low-memory, then issue 22's precision levers at
# 256x256, cutn 32 (bf16 weights cast once, the pixgen.models.vit walk, attention kernels) with each
# one's gradient cosine to plain fp32. Record the figures in BENCHMARKS.md with the card's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -m pytest -q -m gpu tests
"$PY" benchmarks/speed.py --device cuda --sizes 512 --cutns 64 --paths fp32,bf16,fp16,compile,low-memory --steps 5 --quick-grid
"$PY" benchmarks/speed.py --device cuda --levers --steps 5
