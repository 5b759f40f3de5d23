"""Shared fixtures: tiny real models (taming and open_clip classes), written and read through
the real loaders, and a helper that runs the CLI in-process."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import yaml

from pixgen.models.vqgan import TINY_ARCH, VQGANArch

# `precision: auto` asks a timing calibration on bf16 CPUs; the suite must not depend on how loaded
# the machine is, so it pins the answer (fp32, as before small models were calibrated too), here
# and in every subprocess a test starts. The calibration's own tests clear it.
os.environ.setdefault("PIXGEN_BF16_SPEEDUP", "1.0")


def taming_state_dict(arch: VQGANArch, seed: int = 0, prefix: str = "") -> dict:
    """A random state dict in taming's VQModel/GumbelVQ layout, training leftovers included."""
    from pixgen.models.vqgan import VQGANDecoder, VQGANEncoder

    torch.manual_seed(seed)
    dec, enc = VQGANDecoder(arch), VQGANEncoder(arch)
    sd = {}
    for k, v in dec.state_dict().items():
        if k != "codebook":
            sd[k] = v
    for k, v in enc.state_dict().items():
        if k == "codebook":
            continue
        sd[("quantize." + k) if k.startswith("proj.") else k] = v
    sd[arch.codebook_key] = torch.randn(arch.n_embed, arch.embed_dim)
    sd["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(4, 3, 3, 3)
    return {prefix + k: v for k, v in sd.items()}


def taming_yaml(arch: VQGANArch, net2net: bool = False) -> dict:
    target = "taming.models.vqgan.GumbelVQ" if arch.kind == "gumbel" else "taming.models.vqgan.VQModel"
    first = {
        "target": target,
        "params": {
            "embed_dim": arch.embed_dim,
            "n_embed": arch.n_embed,
            "ddconfig": copy.deepcopy(arch.ddconfig),
            "lossconfig": {
                "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                "params": {"disc_start": 1},
            },
        },
    }
    if net2net:
        return {
            "model": {
                "target": "taming.models.cond_transformer.Net2NetTransformer",
                "params": {
                    "first_stage_config": first,
                    "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT"},
                },
            }
        }
    return {"model": first}


def write_taming(
    tmp_path, arch: VQGANArch = TINY_ARCH, net2net: bool = False, sd: dict | None = None, name: str = "tiny"
):
    """Write model.yaml + last.ckpt the way taming/Lightning does; returns their paths."""
    cfg, ckpt = tmp_path / f"{name}.yaml", tmp_path / f"{name}.ckpt"
    cfg.write_text(yaml.safe_dump(taming_yaml(arch, net2net)))
    if sd is None:
        sd = taming_state_dict(arch, prefix="first_stage_model." if net2net else "")
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 1000}, ckpt)
    return cfg, ckpt


@pytest.fixture
def tiny_files(tmp_path):
    return write_taming(tmp_path)


@pytest.fixture
def cli(capsys):
    """run(args) -> (exit code, stdout, stderr), through pixgen.cli.app.main in-process."""
    from pixgen.cli.app import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


SMOKE = ("--preset", "smoke")


class StopAfter:
    """A should_stop for the API that says yes once `steps` steps are done (its on_step counts
    them): the run is asked at every phase too (pixgen.phases), so counting calls would not do."""

    def __init__(self, steps: int):
        self.steps, self.done = steps, 0

    def on_step(self, step, total) -> None:
        self.done = step.i

    def __call__(self) -> bool:
        return self.done >= self.steps

    def kw(self) -> dict:
        """The keywords that give a run these hooks: api.generate(settings, **StopAfter(2).kw())."""
        from pixgen.phases import Hooks

        return {"hooks": Hooks(on_step=self.on_step, should_stop=self)}
