"""The condition of a class-conditional prior, chosen by CLIP: the prompt scored against
ImageNet's class names (open_clip's IMAGENET_CLASSNAMES, each the mean of its embeddings in
SIMPLE_IMAGENET_TEMPLATES, the 7 of OpenAI's 80 templates that CLIP's authors kept for their
zero-shot classifier), or named by the user.

Embedding 1000 classes x 7 templates is CLIP's costliest text job (under a minute for ViT-B/32
on two CPU cores, where the 80 templates took minutes: BENCHMARKS.md, "The first class
choice"), so the class matrix is kept per scorer in memory and on disk in pixgen's cache, keyed
by the CLIP's name, the class list and the templates, and checked against a probe text's embedding so that
other weights under the same name are never served a stale matrix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pixgen.errors import PixgenError
from pixgen.paths import cache_dir

if TYPE_CHECKING:  # torch is imported where it is used: class_index checks --prior-class without it
    from torch import Tensor

log = logging.getLogger("pixgen")
PROBE = "a photo of something"
_MEMORY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # scorer -> {key: (C, D) matrix}


def imagenet_classes() -> list[str]:
    """ImageNet's 1000 class names in index order (open_clip's IMAGENET_CLASSNAMES): the
    condition tokens 0-999 of taming's class-conditional transformer."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def imagenet_templates() -> list[str]:
    """The class prompts' templates, as strings with {} where the class goes: open_clip's
    SIMPLE_IMAGENET_TEMPLATES (7 of OpenAI's 80, the set CLIP's authors chose as nearly as good)."""
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    return [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]


def openai_templates() -> list[str]:
    """OpenAI's 80 ImageNet prompt templates (CLIP's full zero-shot ensemble), as `imagenet_templates`."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


def class_index(name: str, classes: Sequence[str] | None = None) -> int:
    """The index of a class: its exact name (any case) or its index number; anything else is one
    PixgenError line naming a few close names."""
    classes = list(classes) if classes is not None else imagenet_classes()
    text = name.strip()
    if re.fullmatch(r"\d+", text):
        if int(text) < len(classes):
            return int(text)
        raise PixgenError(f"class index {text} is out of range: give 0-{len(classes) - 1} or a class name")
    lower = [c.lower() for c in classes]
    if text.lower() in lower:
        return lower.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lower, n=4, cutoff=0.6)
    close += [c for c in lower if text.lower() and text.lower() in c and c not in close][: 6 - len(close)]
    hint = f"close: {', '.join(classes[lower.index(c)] for c in close)}" if close else "no close name"
    raise PixgenError(f"unknown ImageNet class {name!r} ({hint}); give a class name or an index 0-{len(classes) - 1}")


def check_prior_class(name: str | None) -> None:
    """The --prior-class setting's pre-flight (pixgen.needs.check_run): a class that
    `class_index` knows, or one PixgenError line naming the setting."""
    if not name:
        return
    try:
        class_index(name)
    except PixgenError as e:
        raise PixgenError(f"setting 'prior_class': {e}") from None


def class_condition(index: int) -> Tensor:
    """The (1, 1) long condition of a class-conditional prior, as pixgen.prior.model.sample takes it."""
    import torch

    return torch.tensor([[int(index)]], dtype=torch.long)


def choose_classes(
    scorer,
    prompt_texts: list[str],
    weights: list[float] | None = None,
    k: int = 5,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[tuple[int, str, float]]:
    """The `k` classes most like the prompt: [(index, name, probability)], best first, the
    probabilities renormalised over the `k` (`top_classes` of `class_scores`). `on_progress` as
    for `class_scores`."""
    classes = list(classes) if classes is not None else imagenet_classes()
    scores = class_scores(scorer, prompt_texts, weights, classes, templates, on_progress)
    top, probs = top_classes(scores, k)
    return [(int(i), classes[int(i)], float(p)) for i, p in zip(top, probs, strict=True)]


def class_scores(
    scorer,
    prompt_texts: list[str],
    weights: list[float] | None = None,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """(classes,) logits of the prompt against every class: CLIP's cosine similarities at its
    logit scale (100 for OpenAI's CLIP), so that their softmax is CLIP's zero-shot probability.
    The prompt is the weighted mean of the unit embeddings of its positive-weight texts.
    `on_progress(done, total)` hears the texts embedded when the class matrix is not cached
    (half a minute the first time for a real CLIP on a CPU: 1000 classes x 7 templates)."""
    import torch
    from torch.nn import functional as F

    classes = list(classes) if classes is not None else imagenet_classes()
    weights = list(weights) if weights is not None else [1.0] * len(prompt_texts)
    if len(weights) != len(prompt_texts):
        raise ValueError("one weight per prompt text")
    chosen = [(t, w) for t, w in zip(prompt_texts, weights, strict=True) if w > 0 and t.strip()]
    if not chosen:
        raise PixgenError("no prompt text with a positive weight to choose a class from")
    texts, w = zip(*chosen, strict=True)
    prompt = encode_texts(scorer, list(texts)).cpu()
    prompt = F.normalize((torch.tensor(w).view(-1, 1) * prompt).sum(0), dim=0)
    matrix = class_embeddings(scorer, classes, templates, on_progress)
    scale = scorer.model.logit_scale.exp().item() if hasattr(scorer.model, "logit_scale") else 100.0
    return scale * matrix @ prompt


def top_classes(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The `k` best classes of `scores` (logits, as `class_scores` gives them), best first, and
    their probabilities: the softmax renormalised over those `k` (the softmax of their logits)."""
    top = scores.float().topk(min(k, len(scores)))
    return top.indices, top.values.softmax(0)


def draw_classes(top: Tensor, probs: Tensor, n: int, generator) -> Tensor:
    """(n,) classes, each drawn from `top` with the probabilities `probs` (`top_classes`), from
    `generator`. With one candidate nothing is drawn: the generator is left as it was, so that a
    run with top-k 1 draws the same codes as one that never chose among classes."""
    import torch

    if len(top) == 1:
        return top.expand(n).clone()
    picks = torch.multinomial(probs.cpu().float(), n, replacement=True, generator=generator)
    return top.cpu()[picks]


def class_embeddings(
    scorer, classes: Sequence[str], templates: Sequence[str] | None = None, on_progress=None
) -> Tensor:
    """(classes, D) unit embeddings: each class the normalised mean of its templates' unit
    embeddings. Cached in memory per scorer and on disk per CLIP name, class list and templates."""
    templates = list(templates) if templates is not None else imagenet_templates()
    key = hashlib.sha256(json.dumps([list(classes), templates]).encode()).hexdigest()[:16]
    held = _MEMORY.setdefault(scorer, {})
    if key not in held:
        probe = encode_texts(scorer, [PROBE])[0].cpu()
        path = _disk_path(scorer.name, key)
        held[key] = _read_cached(path, probe)
        if held[key] is None:
            held[key] = _embed_classes(scorer, classes, templates, on_progress)
            _write_cached(path, held[key], probe)
    return held[key]


def _embed_classes(scorer, classes, templates, on_progress=None, batch: int = 256) -> Tensor:
    """Every class in every template, shortest texts first so that each batch is cut short."""
    import torch
    from torch.nn import functional as F

    texts = [t.replace("{}", c) for c in classes for t in templates]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = None
    for start in range(0, len(texts), batch):
        rows = order[start : start + batch]
        e = encode_texts(scorer, [texts[i] for i in rows]).cpu()
        out = out if out is not None else torch.empty(len(texts), e.shape[1])
        out[rows] = e
        if on_progress:
            on_progress(start + len(rows), len(texts))
    return F.normalize(out.view(len(classes), len(templates), -1).mean(1), dim=-1)


def encode_texts(scorer, texts: list[str]) -> Tensor:
    """(N, D) float32 unit text embeddings, as `scorer.encode_text` gives them. For open_clip's
    CLIP (causal text tower, pooled at the end-of-text token) the padding after the longest
    text is cut first: the same embeddings, about 5x sooner for short texts such as class prompts."""
    import torch

    model = scorer.model
    if not _cuttable(model):
        return scorer.encode_text(texts)
    with torch.no_grad():
        return _encode_cut(model, scorer.tokenizer(texts).to(scorer.mean.device))


def _encode_cut(model, tokens: Tensor) -> Tensor:
    import torch
    from torch.nn import functional as F

    n = int((tokens != 0).sum(1).max())  # the tokenizer pads with 0; the end-of-text id is the largest
    tokens = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = x[torch.arange(len(x)), tokens.argmax(-1)]  # (N, width) at each text's end-of-text token
    x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
    return F.normalize(x.float(), dim=-1)


def _cuttable(model) -> bool:
    from open_clip.model import CLIP

    return (
        type(model) is CLIP
        and getattr(model, "text_pool_type", "argmax") == "argmax"
        and getattr(model, "attn_mask", None) is not None
        and model.text_projection is not None
    )


def _disk_path(name: str, key: str):
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return cache_dir() / "classes" / f"{safe}-{key}.safetensors"


def _read_cached(path, probe: Tensor) -> Tensor | None:
    """The cached matrix at `path` when it was made by a CLIP that embeds the probe the same."""
    from torch.nn import functional as F

    from pixgen.weights_io import read_tensors

    if not path.is_file():
        return None
    try:
        data = read_tensors(path)
        if F.cosine_similarity(data["probe"].float(), probe, dim=0) > 0.999:
            return data["classes"].float()
    except Exception as e:
        log.warning("class embedding cache %s is unreadable (%s); embedding again", path, e)
    return None


def _write_cached(path, matrix: Tensor, probe: Tensor) -> None:
    from pixgen.weights_io import write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, {"classes": matrix, "probe": probe})
    except (OSError, PixgenError) as e:
        log.warning("could not cache the class embeddings: %s", e)
