"""The simulated Goodman Red camera: readout geometry, fixed defects, bias, cosmic rays, noise.

Everything a reduction has to remove lives here, so that the optical models only deal in
electrons on the light-sensitive area. Positions are 0-based indices of the raw binned
array, ``data[y, x]``; the FITS sections derived from them are 1-based and inclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

GAIN = 1.48  # e-/ADU
RDNOISE = 3.89  # e-
SATURATION = 65535  # ADU, the 16-bit converter's ceiling
PIXEL_UM = 15.0
PRESCAN_UNBINNED = 50  # serial pre-masked columns before the image area (Goodman: 50)
READ_TIME_S = {1: 8.95, 2: 4.1}
# Rows/columns of the unbinned CCD (4096 x 4096) read out for each ROI (before binning).
_ROI_UNBINNED = {
    # name: (columns read incl. prescan, rows read, light-sensitive columns after prescan)
    "Spectroscopic": (4142, 1896, 4060),
    "Imaging": (3100, 3100, 3050),
}
CR_RATE_PER_CM2_MIN = 1.2  # muons + secondaries at 2700 m, deep-depletion CCD
CR_MIN_ELECTRONS = 15.0  # deposits below ~4 sigma of read noise are dropped
DEPLETION_UM = 40.0


@dataclass(frozen=True)
class Readout:
    """Geometry of one ROI at one binning, in raw binned pixels (0-based, half-open)."""

    kind: str  # "Spectroscopic" | "Imaging"
    binning: int
    naxis1: int
    naxis2: int
    data_x: tuple[int, int]  # light-sensitive columns of the data section
    bias_x: tuple[int, int]  # prescan columns used as overscan (bias) strip
    active_x0: int  # first physical (non-prescan) column

    @property
    def roi(self) -> str:
        return f"{self.kind} {self.binning}x{self.binning}"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.naxis2, self.naxis1)

    @property
    def datasec(self) -> str:
        return _section(self.data_x, (0, self.naxis2))

    @property
    def trimsec(self) -> str:
        # Goodman trims the first row too: its charge is unreliable after the parallel clock.
        return _section(self.data_x, (1, self.naxis2))

    @property
    def biassec(self) -> str:
        return _section(self.bias_x, (0, self.naxis2))

    def sections(self) -> dict[str, str]:
        return {"DATASEC": self.datasec, "TRIMSEC": self.trimsec, "BIASSEC": self.biassec}


def _section(xr: tuple[int, int], yr: tuple[int, int]) -> str:
    return f"[{xr[0] + 1}:{xr[1]},{yr[0] + 1}:{yr[1]}]"


def make_readout(kind: str, binning: int) -> Readout:
    """Readout geometry for ``kind`` ("Spectroscopic"/"Imaging") at 1x1 or 2x2."""
    if binning not in (1, 2):
        raise ValueError("binning must be 1 or 2")
    ncols, nrows, nlight = _ROI_UNBINNED[kind]
    pre = PRESCAN_UNBINNED // binning
    return Readout(
        kind=kind,
        binning=binning,
        naxis1=ncols // binning,
        naxis2=nrows // binning,
        data_x=(pre, pre + nlight // binning),
        # Skip the first prescan columns (serial register settling) and the last one
        # (charge spilling from the first image column).
        bias_x=(math.ceil(6 / binning), 48 // binning),
        active_x0=pre,
    )


@dataclass
class Detector:
    """Fixed properties of the CCD as read out through one ROI."""

    readout: Readout
    bias_pattern: np.ndarray  # ADU, float32, zero mean over the active area
    prnu: np.ndarray  # pixel response (1 +- ~1 %) over the full frame, float32
    hot_pixels: np.ndarray  # int (n, 2) rows of (y, x)
    hot_rates: np.ndarray  # e-/s of each hot pixel
    bad_column: dict[str, int | float]
    truth: dict[str, object] = field(default_factory=dict)

    def dark_electrons(self, exptime: float) -> np.ndarray:
        """Electrons of the fixed defects (hot pixels, bad column) in a frame."""
        img = np.zeros(self.readout.shape)
        # Hot pixels also collect during the ~readout time, so they show in biases.
        img[self.hot_pixels[:, 0], self.hot_pixels[:, 1]] = self.hot_rates * (exptime + 2.0)
        bc = self.bad_column
        img[int(bc["y0"]) :, int(bc["x"])] += float(bc["electrons"])
        return img


def _hot_pixel_catalogue(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hot pixels on the unbinned 4096x4096 CCD (y, x, rate e-/s), fixed for the camera."""
    n = 700
    y = rng.integers(0, 4096, n)
    x = rng.integers(0, 4096, n)
    rate = np.exp(rng.uniform(np.log(0.5), np.log(40.0), n))
    return np.stack([y, x], axis=1), rate


def make_detector(readout: Readout, camera_rng: np.random.Generator) -> Detector:
    """Build the fixed detector for ``readout``.

    ``camera_rng`` must be a fresh generator derived from the night's seed only, so the
    same physical defects appear in every ROI and binning of that seed.
    """
    b = readout.binning
    ny, nx = readout.shape
    hot_u, rate_u = _hot_pixel_catalogue(camera_rng)
    bad_x_u = int(camera_rng.integers(900, 2900))  # inside both ROIs
    bad_y0_u = int(camera_rng.integers(200, 900))
    pattern_rng, prnu_rng = camera_rng.spawn(2)
    # Unbinned CCD (row, col) -> raw binned pixel. The ROIs are centred on the CCD rows.
    row0 = (4096 - ny * b) // 2
    hy = (hot_u[:, 0] - row0) // b
    hx = hot_u[:, 1] // b + readout.active_x0
    keep = (hy >= 0) & (hy < ny) & (hx >= readout.active_x0) & (hx < nx)
    hot = np.stack([hy[keep], hx[keep]], axis=1)
    # Binned hot pixels sum their members; a pixel hit twice keeps both rates.
    flat = hot[:, 0] * nx + hot[:, 1]
    uniq, inv = np.unique(flat, return_inverse=True)
    rates = np.bincount(inv, weights=rate_u[keep])
    hot = np.stack([uniq // nx, uniq % nx], axis=1).astype(np.int64)

    yy = np.arange(ny, dtype=np.float32)[:, None]
    xx = np.arange(nx, dtype=np.float32)[None, :]
    a = readout.active_x0
    # Amplifier glow-like ramp at the readout side, a gentle slope along the columns,
    # a faint row ripple and a fixed pixel-to-pixel component: a few ADU in total.
    ramp = 3.0 * np.exp(-(xx - a) * b / 120.0) * (xx >= a)
    slope = 1.2 * (yy / ny - 0.5) + 0.6 * ((xx - a) / (nx - a) - 0.5)
    ripple = 0.4 * np.sin(2 * np.pi * yy * b / 173.0 + 0.7)
    fixed = pattern_rng.normal(0.0, 0.6, (ny, nx)).astype(np.float32)
    pattern = (ramp + slope + ripple + fixed).astype(np.float32)
    pattern[:, :a] = 0.0  # the prescan (overscan strip) carries the bare level
    pattern[:, a:] -= pattern[:, a:].mean()

    prnu = np.ones((ny, nx), dtype=np.float32)
    prnu[:, a:] += prnu_rng.normal(0.0, 0.008, (ny, nx - a)).astype(np.float32)

    bad = {"x": int(bad_x_u // b + a), "y0": int(max(bad_y0_u - row0, 0) // b), "electrons": 180.0}
    truth = {
        "roi": readout.roi,
        "hot_pixels": [
            [int(y), int(x), round(float(r), 4)] for (y, x), r in zip(hot, rates, strict=True)
        ],
        "hot_pixels_note": "[y, x, dark rate e-/s]; exposed for EXPTIME + 2 s",
        "bad_column": {
            "x": bad["x"],
            "y_from": bad["y0"],
            "y_to": ny - 1,
            "excess_electrons": bad["electrons"],
            "note": "hot column: constant excess charge from y_from to the top",
        },
        "bias_pattern_rms_adu": round(float(pattern[:, a:].std()), 4),
        "prnu_rms": 0.008,
    }
    return Detector(readout, pattern, prnu, hot, rates, bad, truth)


def bias_level(hours: float, base: float, drift: float, wobble: float, phase: float) -> float:
    """Bias level (ADU) ``hours`` after the first frame: slow drift plus a thermal wobble."""
    return base + drift * hours + wobble * math.sin(2 * math.pi * hours / 5.0 + phase)


def cosmic_rays(
    readout: Readout, exptime: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Charge deposited by cosmic rays during ``exptime`` and the per-event pixel lists.

    Tracks are drawn on the unbinned grid from a muon-like angular distribution through a
    40 um depletion layer (~80 e-/um) and binned afterwards, so 2x2 frames get the same
    physical events in fewer, brighter pixels. Deposits under ``CR_MIN_ELECTRONS`` are
    discarded so that the listed pixels are exactly the charged ones.
    """
    b = readout.binning
    ny, nx = readout.shape
    a = readout.active_x0
    width_u, height_u = (nx - a) * b, ny * b
    area_cm2 = width_u * height_u * (PIXEL_UM * 1e-4) ** 2
    n = int(rng.poisson(CR_RATE_PER_CM2_MIN * area_cm2 * exptime / 60.0))
    img = np.zeros(readout.shape)
    if n == 0:
        return img, []
    x0 = rng.uniform(0, width_u, n)
    y0 = rng.uniform(0, height_u, n)
    cos_t = rng.uniform(0.0, 1.0, n) ** (1.0 / 3.0)  # ~cos^2 zenith law on a flat sensor
    tan_t = np.sqrt(np.clip(1.0 - cos_t**2, 0, None)) / np.maximum(cos_t, 0.05)
    length = np.minimum(DEPLETION_UM * tan_t / PIXEL_UM, 30.0)  # projected, unbinned px
    phi = rng.uniform(0, 2 * np.pi, n)
    path_um = np.hypot(DEPLETION_UM, length * PIXEL_UM)
    charge = 80.0 * path_um * rng.lognormal(0.0, 0.35, n)
    # A few soft (X-ray/electron) events: compact and faint.
    soft = rng.random(n) < 0.15
    length[soft] = 0.0
    charge[soft] = rng.uniform(150.0, 900.0, soft.sum())
    steps = np.maximum(4, np.ceil(length * 4)).astype(int)
    ev = np.repeat(np.arange(n), steps)
    frac = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(
        np.maximum(steps - 1, 1), steps
    )
    s = (frac - 0.5) * length[ev]
    px = x0[ev] + s * np.cos(phi[ev]) + rng.normal(0, 0.35, ev.size)
    py = y0[ev] + s * np.sin(phi[ev]) + rng.normal(0, 0.35, ev.size)
    q = charge[ev] / steps[ev]
    ix = np.floor(px / b).astype(np.int64) + a
    iy = np.floor(py / b).astype(np.int64)
    ok = (ix >= a) & (ix < nx) & (iy >= 0) & (iy < ny)
    key = ev[ok] * (ny * nx) + iy[ok] * nx + ix[ok]
    uniq, inv = np.unique(key, return_inverse=True)
    dep = np.bincount(inv, weights=q[ok])
    strong = dep >= CR_MIN_ELECTRONS
    uniq, dep = uniq[strong], dep[strong]
    ev_id, pix = uniq // (ny * nx), uniq % (ny * nx)
    np.add.at(img.reshape(-1), pix, dep)
    events: list[dict[str, object]] = []
    bounds = np.flatnonzero(np.diff(ev_id)) + 1
    for grp_pix, grp_dep in zip(np.split(pix, bounds), np.split(dep, bounds), strict=True):
        if grp_pix.size == 0:
            continue
        events.append(
            {
                "pixels": [[int(p // nx), int(p % nx)] for p in grp_pix],
                "electrons": [round(float(d), 1) for d in grp_dep],
            }
        )
    return img, events


POISSON_EXACT_BELOW = 1000.0


def shot_noisy(electrons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photon/dark shot noise: exact Poisson for low counts, Gaussian above 1000 e-.

    Only pixels with charge are sampled (a bias is almost all zeros), and the normal
    approximation, indistinguishable at those counts (skewness < 0.03), is several times
    faster than numpy's Poisson sampler on flats: a 1x1 night stays within seconds.
    """
    lam = np.clip(electrons, 0, None)
    out = np.zeros(lam.shape)
    high = lam >= POISSON_EXACT_BELOW
    low = (lam > 0) & ~high
    out[low] = rng.poisson(lam[low])
    mean = lam[high]
    out[high] = np.rint(mean + np.sqrt(mean) * rng.standard_normal(mean.size))
    return out


def read_out(
    electrons: np.ndarray,
    detector: Detector,
    level: float,
    rng: np.random.Generator,
    *,
    shot_noise: bool,
    extra_electrons: np.ndarray | None = None,
) -> np.ndarray:
    """Turn an expected-electron image into a raw uint16 frame.

    Photon and dark shot noise, then charge added without further noise (cosmic rays),
    conversion by the gain, the frame's bias level plus the fixed pattern, read noise,
    and finally the 16-bit converter's rounding and clipping.
    """
    signal = shot_noisy(electrons, rng) if shot_noise else electrons.astype(np.float64)
    if extra_electrons is not None:
        signal += extra_electrons
    adu = signal / GAIN
    adu += level
    adu += detector.bias_pattern
    adu += rng.standard_normal(adu.shape, dtype=np.float32) * np.float32(RDNOISE / GAIN)
    np.clip(adu, 0, SATURATION, out=adu)
    return np.rint(adu).astype(np.uint16)
