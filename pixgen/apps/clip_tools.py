"""CLIP's other jobs with the models pixgen already loads: score, classify, search."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pixgen.errors import PixgenError
from pixgen.loop.prompts import parse_prompt_spec
from pixgen.models.loading import load_scorer
from pixgen.models.scorer import ClipScorer
from pixgen.outputs.images import open_rgb, to_clip_tensor
from pixgen.outputs.writer import CONTACT_SHEET, CONTACT_SHEET_MARKER
from pixgen.regions import in_order, pixel_box
from pixgen.runtime.device import resolve_device
from pixgen.weights_io import write

log = logging.getLogger("pixgen")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
INDEX_NAME = ".pixgen-index.safetensors"


def load_scorer_on(spec: str, device: str = "auto") -> ClipScorer:
    """A CLIP scorer (NAME:TAG, NAME:PATH, shapes...) on `device`, frozen, for the tools below."""

    return load_scorer(spec).to(resolve_device(device)).eval().requires_grad_(False)


def read_labels(labels: str | None = None, labels_file: Path | None = None) -> list[str]:
    """Labels from a file (one a line) or a comma list; neither is a PixgenError."""
    if labels_file is not None:
        try:
            return [x.strip() for x in Path(labels_file).read_text(encoding="utf-8").splitlines() if x.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise PixgenError(f"cannot read labels file {labels_file}: {e}") from None
    if labels:
        return [x.strip() for x in labels.split(",") if x.strip()]
    raise PixgenError('give --labels "a,b,c" or --labels-file FILE')


@torch.no_grad()
def embed_images(scorer: ClipScorer, images, batch: int = 32) -> torch.Tensor:
    """PIL images -> (N, D) unit CLIP embeddings."""
    out = []
    device = scorer.mean.device
    for i in range(0, len(images), batch):
        x = torch.stack([to_clip_tensor(im, scorer.input_size) for im in images[i : i + batch]]).to(device)
        out.append(scorer.encode_image(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1)


def score(scorer: ClipScorer, paths: list[Path], prompts: list[str]) -> torch.Tensor:
    """(images, prompts) cosine similarities."""
    if not prompts or any(not p.strip() for p in prompts):
        raise PixgenError("give at least one non-empty --prompt")
    embeds = embed_images(scorer, [open_rgb(p) for p in paths])
    return embeds @ scorer.encode_text(prompts).float().cpu().T


def classify(scorer: ClipScorer, paths: list[Path], labels: list[str], template: str = "a photo of a {}"):
    """Zero-shot classification: (images, labels) probabilities from CLIP's scaled similarities."""
    labels = [label.strip() for label in labels if label.strip()]
    if len(labels) < 2:
        raise PixgenError('give at least two labels, e.g. --labels "cat,dog"')
    if "{}" not in template:
        raise PixgenError(f"the template must contain {{}} where the label goes, got {template!r}")
    sims = score(scorer, paths, [template.format(label) for label in labels])
    scale = scorer.model.logit_scale.exp().item() if hasattr(scorer.model, "logit_scale") else 100.0
    return (sims * scale).softmax(-1)


@dataclass
class Hit:
    path: Path
    score: float


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_index(path: Path, model: str) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """(content hash -> embedding, relative path -> [size, mtime_ns, hash]); empty if stale."""
    from safetensors import safe_open

    if not path.is_file():
        return {}, {}
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("model") != model:
                return {}, {}
            embeds = f.get_tensor("embeds")
        hashes = json.loads(meta["hashes"])
        return dict(zip(hashes, embeds, strict=True)), json.loads(meta.get("stats", "{}"))
    except Exception:
        log.warning("search index %s is unreadable; rebuilding it", path)
        return {}, {}


def _save_index(path: Path, model: str, index: dict[str, torch.Tensor], stats: dict) -> None:

    if not index:
        return
    hashes = sorted(index)
    embeds = torch.stack([index[h] for h in hashes])
    try:
        write(path, {"embeds": embeds}, {"model": model, "hashes": json.dumps(hashes), "stats": json.dumps(stats)})
    except PixgenError as e:
        log.warning("could not save the search index: %s", e)


def is_contact_sheet(path: Path) -> bool:
    """A contact sheet pixgen wrote (`pixgen batch`): named contact_sheet.png beside its index.html,
    or carrying pixgen's contact-sheet marker."""
    if path.name != CONTACT_SHEET:
        return False
    if (path.parent / "index.html").is_file():
        return True
    try:
        from PIL import Image

        with Image.open(path) as im:
            return bool(im.info.get(CONTACT_SHEET_MARKER))
    except OSError:
        return False


def searchable_images(folder: Path, index_path: Path | None = None) -> list[Path]:
    """The image files under `folder`, less pixgen's own: the search index and contact sheets."""
    skip = index_path.resolve() if index_path is not None else None
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and p.name != INDEX_NAME
        and (skip is None or p.resolve() != skip)
        and not is_contact_sheet(p)
    )


def search(
    scorer: ClipScorer,
    folder: Path,
    text: str,
    top: int = 10,
    progress: Callable[[int, int], None] | None = None,
    index_path: Path | None = None,
) -> list[Hit]:
    """Rank the images in `folder` (recursively) by similarity to `text`.

    Embeddings are cached in an index file, keyed by file content hash, so only new or changed
    files are embedded again: by default `.pixgen-index.safetensors` in the folder, or
    `index_path` anywhere else (for read-only folders). Non-image files are skipped with a
    warning; so are the index itself and pixgen's contact sheets.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PixgenError(f"not a folder: {folder}")
    if not text.strip():
        raise PixgenError("empty search text")
    index_path = Path(index_path) if index_path is not None else folder / INDEX_NAME
    if index_path.is_dir():
        raise PixgenError(f"--index {index_path} is a folder; give a file path such as {index_path / INDEX_NAME}")
    files = searchable_images(folder, index_path)
    index, stats = _load_index(index_path, scorer.name)
    if stats.get("\0folder") not in (None, str(folder.resolve())):
        stats = {}  # an index shared with another folder: reuse its embeddings, re-check the files
    keys, fresh, new_stats = [], {}, {}
    for i, path in enumerate(files):
        rel, st = str(path.relative_to(folder)), path.stat()
        known = stats.get(rel)
        if known and known[:2] == [st.st_size, st.st_mtime_ns] and known[2] in index:
            key = known[2]  # unchanged since the last search: no need to read it again
        else:
            key = _file_hash(path)
        new_stats[rel] = [st.st_size, st.st_mtime_ns, key]
        if key not in index and key not in fresh:
            try:
                fresh[key] = embed_images(scorer, [open_rgb(path)])[0]
            except PixgenError as e:
                log.warning("skipping %s", e)
                key = None
        keys.append(key)
        if progress:
            progress(i + 1, len(files))
    new_stats["\0folder"] = str(folder.resolve())
    if fresh or new_stats != stats:
        index.update(fresh)
        _save_index(index_path, scorer.name, index, new_stats)
    ok = [(p, k) for p, k in zip(files, keys, strict=True) if k is not None]
    if not ok:
        return []
    sims = torch.stack([index[k] for _, k in ok]) @ scorer.encode_text([text]).float().cpu()[0]
    order = sims.argsort(descending=True)[:top]
    return [Hit(ok[i][0], float(sims[i])) for i in order]


def clip_score(scorer, image_path: Path, prompt: str) -> float:
    """How well an image matches a prompt: the weighted mean CLIP cosine similarity to its parts
    (in story mode, to the last phrase's, where the image ends); a part with a region is compared
    with that part of the image."""
    prompts = parse_prompt_spec(prompt)[-1]
    image = open_rgb(image_path)
    if all(p.region is None for p in prompts):
        sims = embed_images(scorer, [image]) @ scorer.encode_text([p.text for p in prompts]).float().cpu().T
        weights = torch.tensor([p.weight for p in prompts])
        return float((sims[0] * weights).sum() / weights.abs().sum())
    regions = in_order(p.region for p in prompts)
    crops = [image if r is None else image.crop(pixel_box(r, *image.size)) for r in regions]
    embeds = embed_images(scorer, crops)[[regions.index(p.region) for p in prompts]]
    sims = (embeds * scorer.encode_text([p.text for p in prompts]).float().cpu()).sum(-1)
    weights = torch.tensor([p.weight for p in prompts])
    return float((sims * weights).sum() / weights.abs().sum())


def ensemble_score(models, image_path: Path, prompt: str) -> float:
    """`clip_score` averaged over the run's CLIP models by their ensemble weights."""
    total = sum(models.clip_weights)
    return sum(
        w / total * clip_score(scorer, image_path, prompt)
        for scorer, w in zip(models.scorers, models.clip_weights, strict=True)
    )
