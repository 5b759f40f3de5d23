"""Images: reading user images safely (any common format to RGB, or one clear error), and
converting between tensors and PIL images."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pixgen.errors import PixgenError

MAX_PIXELS = 64_000_000  # refuse decompression bombs well before they exhaust memory


def open_rgb(path: str | Path) -> Image.Image:
    """Open an image file and convert it to 8-bit RGB (palette, 16-bit, CMYK, alpha included)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise PixgenError(f"image {path} is too large ({im.width}x{im.height} pixels)")
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(im, dtype=np.float64)
                    im = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    im = im.convert("RGBA")
                    flat = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(flat, im)
                return im.convert("RGB")
    except PixgenError:
        raise
    except FileNotFoundError:
        raise PixgenError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise PixgenError(f"{path} is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PixgenError(f"image {path} is too large (a decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
        raise PixgenError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else 'unreadable'}") from None


def to_clip_tensor(image: Image.Image, size: int):
    """Resize the shorter side to `size` (bicubic), centre-crop, -> (3, size, size) in [0, 1]."""
    import torch

    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def to_pil(image) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1] -> 8-bit RGB PIL image."""
    arr = image.detach().float().cpu()
    if arr.dim() == 4:
        arr = arr[0]
    arr = (arr.nan_to_num(0.0).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")
