"""A pack's inputs gathered as the pixel bytes they were scaled from: a quarter of the memory to fetch."""

from __future__ import annotations

import weakref

import torch

from search.engine.data import PIXEL_LEVELS, PIXEL_OFFSET, scaled_pixels

CHECK_ROWS = 4096

_pixel_cache: tuple[weakref.ref, int, torch.Tensor | None] | None = None


def pixel_bytes(x: torch.Tensor) -> torch.Tensor | None:
    """x as the bytes p it was scaled from, as search/engine/data.py scales pixels (p / 255 - 0.5), or None
    unless scaling them back gives x to the bit. The last answer is kept, for the next pack on the same x."""
    global _pixel_cache
    if _pixel_cache is not None and _pixel_cache[0]() is x and _pixel_cache[1] == x._version:
        return _pixel_cache[2]
    pixels = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    exact = x.dim() == 2
    for start in range(0, len(x) if exact else 0, CHECK_ROWS):  # chunks: no float copy of all of x at once
        chunk = x[start : start + CHECK_ROWS]
        levels = chunk.add(PIXEL_OFFSET).mul_(PIXEL_LEVELS).round_()
        if levels.min() < 0 or levels.max() > PIXEL_LEVELS:
            exact = False
            break
        pixels[start : start + CHECK_ROWS] = levels
        if not torch.equal(scale_pixels(pixels[start : start + CHECK_ROWS], levels), chunk):
            exact = False
            break
    result = pixels if exact else None
    _pixel_cache = (weakref.ref(x), x._version, result)
    return result


def scale_pixels(pixels: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """p / 255 - 0.5 into `out`, by the same float ops as search/engine/data.py."""
    return scaled_pixels(out.copy_(pixels))


def center_pixels(pixels: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """p - 127.5 into `out`: 255 times the input p / 255 - 0.5, in one pass and exact in floats."""
    return out.copy_(pixels).sub_(PIXEL_LEVELS * PIXEL_OFFSET)
