"""The simulator's truth laid back onto a frame, to score a reduction against it.

Tests and benchmarks judge cosmic-ray detection and defect masks by the same rules, so
the rules live once, next to the simulator that wrote ``truth.json``: pixel positions
there are raw (untrimmed) array indices, and ``origin`` is the raw (y, x) of pixel [0, 0]
of the frame being scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


def known_defects(
    truth: Mapping[str, Any], roi: str, origin: tuple[int, int], shape: tuple[int, int]
) -> np.ndarray:
    """Hot pixels and the hot column of the readout ``roi``, as a boolean frame."""
    y0, x0 = origin
    d = truth["detector"]["readouts"][roi]["defects"]
    known = np.zeros(shape, bool)
    for y, x, _ in d["hot_pixels"]:
        if 0 <= y - y0 < shape[0] and 0 <= x - x0 < shape[1]:
            known[y - y0, x - x0] = True
    bc = d["bad_column"]
    if 0 <= bc["x"] - x0 < shape[1]:
        known[max(bc["y_from"] - y0, 0) :, bc["x"] - x0] = True
    return known


@dataclass(frozen=True)
class CosmicScore:
    events: int  # events with at least one pixel of more than 5 sigma of charge
    missed: int  # of those, events with such a pixel left unflagged
    false: np.ndarray  # flagged pixels no event touched (defects excluded)

    @property
    def removed(self) -> float:
        return 1.0 - self.missed / max(self.events, 1)


def score_cosmic_rays(
    frame: Mapping[str, Any],
    found: np.ndarray,
    origin: tuple[int, int],
    known: np.ndarray,
    signal: np.ndarray,
    read_noise: float,
) -> CosmicScore:
    """Compare flagged pixels ``found`` with the frame's injected events.

    ``signal`` (electrons, e.g. the cleaned frame) sets each deposit's significance;
    ``known`` defects count neither way.
    """
    y0, x0 = origin
    label = np.zeros(found.shape, np.int32)
    deposit = np.zeros(found.shape)
    for i, event in enumerate(frame["cosmic_rays"]["events"], start=1):
        for (y, x), e in zip(event["pixels"], event["electrons"], strict=True):
            y, x = y - y0, x - x0
            if 0 <= y < found.shape[0] and 0 <= x < found.shape[1]:
                label[y, x] = i
                deposit[y, x] += e
    noise = np.sqrt(read_noise**2 + np.clip(signal, 0, None))
    significant = (label > 0) & (deposit > 5 * noise) & ~known
    events = np.unique(label[significant])
    missed = np.unique(label[significant & ~found])
    return CosmicScore(len(events), len(missed), found & (label == 0) & ~known)


def near_trace(
    frame: Mapping[str, Any], origin: tuple[int, int], shape: tuple[int, int], fwhm: float = 3.0
) -> np.ndarray:
    """Pixels within ``fwhm`` trace FWHM of the true trace centre (none without a trace)."""
    if "trace" not in frame:
        return np.zeros(shape, bool)
    y0, x0 = origin
    centre = np.polynomial.Polynomial(frame["trace"]["coefficients"])
    yc = centre(np.arange(shape[1]) + x0) - y0
    width = fwhm * frame["trace"]["fwhm_px"]
    return np.abs(np.arange(shape[0])[:, None] - yc[None, :]) <= width


def near_stars(
    frame: Mapping[str, Any], origin: tuple[int, int], pixels: np.ndarray, fwhm: float = 3.0
) -> np.ndarray:
    """Which of the boolean frame's ``pixels`` lie within ``fwhm`` seeing FWHM of a star."""
    out = np.zeros(pixels.shape, bool)
    yy, xx = np.nonzero(pixels)
    if yy.size and frame.get("stars"):
        sy = np.array([s["y"] for s in frame["stars"]]) - origin[0]
        sx = np.array([s["x"] for s in frame["stars"]]) - origin[1]
        d = np.hypot(yy[:, None] - sy[None, :], xx[:, None] - sx[None, :])
        out[yy, xx] = d.min(axis=1) <= fwhm * frame["fwhm_px"]
    return out
