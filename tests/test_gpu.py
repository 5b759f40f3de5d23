"""Checks that need CUDA (run by benchmarks/gpu_check.sh; deselected by default)."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen import api
from pixgen.settings import load_settings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_run_is_finite_and_reproducible(tmp_path, precision):
    s = load_settings(
        preset="shapes",
        overrides=dict(
            prompt="a red circle on a blue background",
            seed=1,
            device="cuda",
            precision=precision,
            output_dir=str(tmp_path),
        ),
    )
    a, b = api.generate(s), api.generate(s)
    assert all(np.isfinite(a.losses))
    pa, pb = np.asarray(Image.open(a.image)), np.asarray(Image.open(b.image))
    assert np.array_equal(pa, pb) or np.abs(pa.astype(int) - pb).mean() < 1.0
