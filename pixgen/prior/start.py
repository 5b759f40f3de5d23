"""The prior start (`--init prior`), DALL-E style: draw code grids from the run's prior for its
prompt, decode them, and rank them by the run's CLIP terms as a step scores an image. The loop
starts from the best one (`prior_rank`: the Nth best); `pixgen sample` keeps the best K and takes
no gradient steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from pixgen.errors import PixgenError
from pixgen.loop.ops import codes_to_latent
from pixgen.loop.specks import speck_counts, stray_pixels
from pixgen.phases import Hooks, Phase
from pixgen.prior.conditions import Condition, condition_for
from pixgen.prior.model import Prior, Sampling, sample
from pixgen.prior.registry import load_prior_model, prior_for_vqgan
from pixgen.runtime.memory import prior_batch
from pixgen.settings import parse_bytes
from pixgen.starts.candidates import picture_loss, score_starts


def prior_name(settings) -> str:
    """The prior a run draws from: `settings.prior`, else the one trained with its VQGAN."""
    if settings.prior:
        return settings.prior
    name = None if settings.vqgan_ckpt else prior_for_vqgan(settings.vqgan)
    if name is None:
        raise PixgenError(f"setting 'prior': no prior is known for the VQGAN {settings.vqgan!r} (give --prior)")
    return name


def load_run_prior(run, hooks: Hooks | None = None) -> Prior:
    """The run's prior on its device, loaded once per Models (batch and serve reuse it)."""
    hooks = hooks or Hooks()
    name, models = prior_name(run.settings), run.models
    if name not in models.priors:
        dtype = run.precision.weights if run.precision is not None else torch.float32
        say = lambda text: hooks.enter(Phase.LOADING_PRIOR, text)  # noqa: E731
        prior = load_prior_model(name, models.decoder.codebook.shape[0], hooks.offline, say, dtype)
        models.priors[name] = prior.to(run.device)
    return models.priors[name]


def budget_of(settings) -> int | None:
    """--memory-budget in bytes, or None."""
    return parse_bytes(settings.memory_budget) if settings.memory_budget else None


def sampling_of(settings) -> Sampling:
    s = settings
    return Sampling(s.prior_temperature, s.prior_top_k, s.prior_top_p, s.prior_guidance)


class CodeStarts(Sequence):
    """Code grids (N, h, w) as starting latents (1, C, rows, columns) of the run's size, made one
    at a time (a grid of another size is resized, nearest code)."""

    def __init__(self, codes: Tensor, codebook: Tensor, rows: int, columns: int):
        self.codes, self.codebook, self.shape = codes, codebook, (rows, columns)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> Tensor:
        grid = self.codes[i][None, None].float()
        if grid.shape[-2:] != self.shape:
            grid = F.interpolate(grid, size=self.shape, mode="nearest")
        return codes_to_latent(grid[0].long().to(self.codebook.device), self.codebook).clone()


@dataclass
class Ranked:
    """Samples of a prior, ranked: `order[0]` is the index of the one the CLIP terms like best."""

    starts: CodeStarts
    losses: list[float]
    order: list[int]
    condition: Condition
    speckled: int | None = None  # samples ranked last for a speck (prior_speck_free), None: not looked

    def record(self, name: str, rank: int) -> dict:
        """What run.json says of the start (and of the classes, for a class-conditional prior):
        the losses in the order of the ranking."""
        losses = [self.losses[i] for i in self.order]
        out = {"prior": name, "condition": self.condition.text, "rank": rank, "losses": losses}
        if self.speckled is not None:
            out["ranked_last_for_a_speck"] = self.speckled
        return out | self.condition.record(self.order[rank - 1])


def draw_and_rank(
    run,
    drawer,
    terms: list,
    generator: torch.Generator,
    hooks: Hooks | None = None,
    phase: int = 0,
    prompts: tuple | None = None,
    speck_free: bool | None = None,
) -> Ranked:
    """Draw `prior_samples` code grids from the run's prior for its prompt's phrase `phase` (or
    for `prompts`, a region's: pixgen.starts.regions) from `generator`, and rank their images,
    drawn by `drawer` (a VQGAN drawer, at its size), by the CLIP terms' first-step loss and the
    regularisers of the picture (starts.candidates.score_starts); with `speck_free` (by default
    the setting prior_speck_free) a sample whose picture has a speck ranks after those without.
    Between batches of samples a stop is honoured."""
    s, hooks = run.settings, hooks or Hooks()
    speck_free = s.prior_speck_free if speck_free is None else speck_free
    prior = load_run_prior(run, hooks)
    hooks.enter(Phase.PRIOR_DRAWING, f"drawing {s.prior_samples} samples from the prior…")
    if s.prior_guidance != 1 and not prior.arch.guidance:
        raise PixgenError("setting 'prior_guidance': this prior was not trained for classifier-free guidance")
    condition = condition_for(prior, run, hooks, s.prior_samples, generator, phase, prompts)

    def progress(info: dict) -> None:
        if info["token"] == 0 and info["done"]:  # between batches: a phase
            hooks.enter(Phase.PRIOR_BATCH, f"drawing samples from the prior: {info['done']}/{info['total']}…")
        else:  # within a batch: a safe point after every token
            hooks.checkpoint()

    batch = prior_batch(prior.arch, prior.tok_emb.weight.dtype.itemsize, budget_of(s), s.prior_guidance != 1)
    codes = sample(prior, condition.value, s.prior_samples, generator, sampling_of(s), batch, progress)
    f = run.models.decoder.factor
    starts = CodeStarts(codes, run.models.decoder.codebook, drawer.size[0] // f, drawer.size[1] // f)
    ranking = lambda: hooks.enter(Phase.PRIOR_RANKING, "ranking the samples…")  # noqa: E731
    stray = []  # with prior_speck_free: each sample's stray pixels, their groups counted at once after
    look = (lambda image: stray.append(stray_pixels(image[0].clamp(0, 1).float()))) if speck_free else None
    losses = score_starts(drawer, terms, starts, generator, checkpoint=ranking, picture=picture_loss(s), look=look)
    order = sorted(range(len(losses)), key=losses.__getitem__)
    if not speck_free:
        return Ranked(starts, losses, order, condition)
    speckled = (speck_counts(torch.stack(stray)) > 0).tolist()
    order = [i for i in order if not speckled[i]] + [i for i in order if speckled[i]]
    return Ranked(starts, losses, order, condition, sum(speckled))


def codes_drawer(run):
    """The VQGAN drawer on the run's decoder at the largest size of whole codes within the run's:
    what draws and ranks the prior's samples for a drawer that takes no codes."""
    from pixgen.drawers.vqgan import VQGANDrawer

    s, decoder = run.settings, run.models.decoder
    f = decoder.factor
    rows, cols = s.height // f, s.width // f
    if not rows or not cols:
        why = f"{s.width}x{s.height} is smaller than the VQGAN's factor {f}, which draws the prior start"
        raise PixgenError(f"setting 'size': {why}")
    return VQGANDrawer(decoder, s.tile, (rows * f, cols * f))


def native_drawer(run, size: tuple[int, int] | None = None):
    """The VQGAN drawer on the run's decoder at `size` (height, width), by default the size the
    run's prior draws at (its grid): what draws a region's subject (pixgen.starts.regions)."""
    from pixgen.drawers.vqgan import VQGANDrawer

    decoder = run.models.decoder
    if size is None:
        rows, cols = load_run_prior(run).arch.grid
        size = (rows * decoder.factor, cols * decoder.factor)
    return VQGANDrawer(decoder, False, size)


@torch.no_grad()
def picture(drawer, z: Tensor, width: int, height: int) -> Tensor:
    """The image (1, 3, height, width) in [0, 1] that `drawer` draws of `z`, resized to the run's
    size where whole codes do not fill it."""
    image = drawer.render(z).float()
    if image.shape[-2:] != (height, width):
        image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
    return image.clamp(0, 1)


def prior_start(
    run, drawer, terms: list, generator: torch.Generator, hooks: Hooks | None = None
) -> tuple[Tensor, dict, Tensor | None]:
    """`--init prior`: the `prior_rank`th best of the ranked samples, what run.json records of it,
    and, for a drawer that takes no VQGAN codes, the picture the VQGAN draws of it (at the run's
    size, for that drawer to fit: pixgen.starts.make). The samples are drawn and ranked through the
    VQGAN either way, so a run's start is the same picture whatever its drawer."""
    ranker = drawer if drawer.takes_codes else codes_drawer(run)
    ranked = draw_and_rank(run, ranker, terms, generator, hooks)
    rank = run.settings.prior_rank
    z, record = ranked.starts[ranked.order[rank - 1]], ranked.record(prior_name(run.settings), rank)
    if run.settings.vary_strength > 0:
        z, vary = vary_codes(run, ranked, ranked.order[rank - 1], hooks)
        record = dict(record, vary=vary)
    if drawer.takes_codes:
        return z, record, None
    return z, dict(record, fitted_into=drawer.name), picture(ranker, z, run.settings.width, run.settings.height)


def vary_codes(run, ranked: Ranked, index: int, hooks: Hooks | None = None) -> tuple[Tensor, dict]:
    """A variation of sample `index`: its grid's first codes kept, in raster order, and the last
    `vary_strength` of them redrawn by the prior after them, from `vary_seed` (its own generator:
    the run's streams are untouched). The starting latent, and what run.json records of it."""
    s = run.settings
    prior = load_run_prior(run, hooks)
    grid = ranked.starts.codes[index].reshape(1, -1)
    kept = round((1 - s.vary_strength) * grid.shape[1])
    cond = ranked.condition.value
    if cond is not None and len(cond) > 1:  # one condition per sample (a class each): this one's
        cond = cond[index : index + 1]
    generator = torch.Generator().manual_seed(s.vary_seed)
    codes = sample(prior, cond, 1, generator, sampling_of(s), given=grid[:, :kept])
    z = CodeStarts(codes, ranked.starts.codebook, *ranked.starts.shape)[0]
    return z, {"strength": s.vary_strength, "seed": s.vary_seed, "codes_kept": kept, "codes": grid.shape[1]}


def prior_keyframes(
    run, drawer, terms: list, generator: torch.Generator, hooks: Hooks | None = None
) -> tuple[list[Tensor], list[dict]]:
    """Story mode on the prior start: the keyframe of each phrase after the first (the start is
    the first's), its `prior_rank`th best sample, drawn for that phrase and ranked by the CLIP terms
    aimed at it (pixgen.loop.story), and what run.json records of each. `drawer` takes codes."""
    rank, name, keyframes, records = run.settings.prior_rank, prior_name(run.settings), [], []
    for phase in range(1, len(run.plan.phases)):
        phase_terms = [t.for_phase(phase) for t in terms]
        ranked = draw_and_rank(run, drawer, phase_terms, generator, hooks, phase)
        keyframes.append(ranked.starts[ranked.order[rank - 1]])
        records.append(ranked.record(name, rank))
    return keyframes, records
