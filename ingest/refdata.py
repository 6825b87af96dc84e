"""Real Goodman reference material (lamp spectra, NIST line lists) for the simulator.

The SOAR ``goodman-pipeline`` distribution on PyPI (BSD-3-Clause) ships a library of
wavelength-calibrated comparison-lamp spectra taken with the real instrument and the NIST
strong-line lists it identifies lines with. Simulated arcs built from them have the line
wavelengths *and* the relative strengths a Goodman user sees, which a hand-made list would
not. Only those data files are unpacked into the service's cache; the package is never
installed or imported, and none of its code is used.

Layout of the cache (``ensure_reference_data`` returns the ``data`` folder)::

    <home>/cache/goodman-pipeline-3.1.0/
        LICENSE                         the package's BSD-3 licence, kept with its data
        data/ref_comp/goodman_comp_<mode>_<lamp>.fits
        data/nist_list/nist_air_strong_lines_<element>.txt

Reference spectra (``ref_comp``) are 1-D float64 primary arrays of the trimmed 1x1 spectral
axis (4060 pixels for most modes), a full Goodman header, and the pipeline's wavelength
solution in ``GSP_*`` keywords: ``GSP_FUNC`` (always ``Chebyshev1D``), ``GSP_ORDR`` and
coefficients ``GSP_C000..`` evaluated on the raw 0-based pixel index (no domain mapping),
plus the identified lines as ``GSP_Pnnn`` (pixel) / ``GSP_Annn`` (air wavelength, Å) pairs,
where ``GSP_Annn = 0`` marks an unidentified feature; older files store some as strings.

Line lists (``nist_list``) are comma-separated text: NIST relative intensity with optional
flags (``1000 Pc``, ``15*``), air wavelength in Å, species (``Ne I``) and a reference code.
NIST intensities are only comparable within one species and say little about a given lamp,
which is why ``measure_line_strengths`` calibrates them on a reference spectrum.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from numpy.polynomial import chebyshev, legendre, polynomial

PACKAGE = "goodman-pipeline"
VERSION = "3.1.0"
CACHE_NAME = f"{PACKAGE}-{VERSION}"
# Only these folders of the package's data/ are reference material; the rest is C source
# of a cosmic-ray tool, pipeline settings and 120 MB of test frames.
DATA_SUBDIRS = ("ref_comp", "nist_list")
_PIP_TIMEOUT_S = 900


class ReferenceDataError(RuntimeError):
    """The Goodman reference data could not be fetched or read."""


def ensure_reference_data(home: Path) -> Path:
    """Return the cached ``data`` folder of goodman-pipeline, downloading it on first use.

    The archive comes from PyPI through pip, so the same index, proxy and certificate
    settings as every other install apply. Files are unpacked into a temporary folder next
    to the cache and renamed into place, so a crash or a concurrent run never leaves a
    half-filled cache behind.
    """
    cache = Path(home) / "cache"
    final = cache / CACHE_NAME
    data = final / "data"
    if data.is_dir():
        return data
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{CACHE_NAME}-", dir=cache) as tmp:
        archive = _download(Path(tmp) / "download")
        staging = Path(tmp) / CACHE_NAME
        _unpack(archive, staging)
        if final.exists() and not data.is_dir():
            # A foreign or damaged folder without data/: set it aside rather than mix.
            final.rename(Path(tmp) / "stale")
        try:
            staging.rename(final)
        except OSError:
            if not data.is_dir():  # not a concurrent run that won the race
                raise
    return data


def _download(dest: Path) -> Path:
    """Fetch the distribution with pip and return the archive it saved."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"{PACKAGE}=={VERSION}",
        "--no-deps",
        "--no-binary",
        ":none:",
        "-d",
        str(dest),
    ]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReferenceDataError(
            f"could not download {PACKAGE}=={VERSION} from the package index: {exc}"
        ) from exc
    archives = sorted(p for p in dest.iterdir() if _archive_kind(p))
    if proc.returncode != 0 or not archives:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise ReferenceDataError(
            f"could not download {PACKAGE}=={VERSION} (reference lamp spectra and line lists) "
            f"with '{' '.join(cmd[1:4])} ...' (exit status {proc.returncode}); check network "
            f"access to the package index or pip's index settings.\n{tail}"
        )
    return archives[0]


def _archive_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".whl"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    return None


def _target(member: str) -> PurePosixPath | None:
    """Where an archive member goes in the cache, or None when it is not wanted.

    Wheels hold ``goodman_pipeline/data/...`` and the licence under ``*.dist-info/``;
    sdists prefix everything with ``goodman_pipeline-3.1.0/``. Both are matched by
    looking for the ``goodman_pipeline/data/`` segment rather than a fixed depth.
    """
    parts = PurePosixPath(member).parts
    if any(p in ("..", "") or p.startswith("/") for p in parts):
        return None
    for i in range(len(parts) - 3):
        if parts[i : i + 2] == ("goodman_pipeline", "data") and parts[i + 2] in DATA_SUBDIRS:
            return PurePosixPath("data", *parts[i + 2 :])
    if (
        parts
        and parts[-1] == "LICENSE"
        and (len(parts) == 2 or (len(parts) >= 2 and parts[-2] == "licenses"))
    ):
        return PurePosixPath("LICENSE")
    return None


def _unpack(archive: Path, dest: Path) -> None:
    """Extract the reference folders of ``archive`` into ``dest`` (which must not exist)."""
    kind = _archive_kind(archive)
    dest.mkdir(parents=True)
    n = 0
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    rel = None if info.is_dir() else _target(info.filename)
                    if rel is not None:
                        _write(dest / rel, zf.read(info))
                        n += rel.parts[0] == "data"
        elif kind == "tar":
            with tarfile.open(archive) as tf:
                for tinfo in tf:
                    rel = _target(tinfo.name) if tinfo.isfile() else None
                    fh = tf.extractfile(tinfo) if rel is not None else None
                    if rel is not None and fh is not None:
                        _write(dest / rel, fh.read())
                        n += rel.parts[0] == "data"
        else:
            raise ReferenceDataError(f"unexpected archive {archive.name}")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise ReferenceDataError(f"cannot unpack {archive.name}: {exc}") from exc
    missing = [d for d in DATA_SUBDIRS if not (dest / "data" / d).is_dir()]
    if n == 0 or missing:
        shutil.rmtree(dest, ignore_errors=True)
        raise ReferenceDataError(
            f"{archive.name} has no goodman_pipeline/data/{{{','.join(DATA_SUBDIRS)}}} folders"
        )


def _write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)


# --------------------------------------------------------------------------- line lists


class NistLine(NamedTuple):
    wavelength: float  # air, Å
    intensity: float  # NIST relative intensity, comparable within one species only
    species: str  # e.g. "Ne I"
    flags: str


_ELEMENT = re.compile(r"[A-Z][a-z]?")


def lamp_elements(lamps: Iterable[str]) -> list[str]:
    """Split lamp names (``"HgArNe"``) or element symbols into unique element symbols."""
    out: list[str] = []
    for lamp in lamps:
        for el in _ELEMENT.findall(lamp):
            if el not in out:
                out.append(el)
    return out


def load_nist_lines(ref_dir: Path, element: str) -> list[NistLine]:
    """Parse one ``nist_air_strong_lines_<element>.txt`` file, sorted by wavelength."""
    path = Path(ref_dir) / "nist_list" / f"nist_air_strong_lines_{element}.txt"
    if not path.is_file():
        raise ReferenceDataError(f"no NIST line list for {element!r} in {path.parent}")
    lines: list[NistLine] = []
    for raw in path.read_text(encoding="ascii", errors="replace").splitlines():
        fields = [f.strip() for f in raw.split(",")]
        if len(fields) < 3:
            continue
        m = re.match(r"(\d+(?:\.\d*)?)\s*(.*)$", fields[0])
        try:
            wavelength = float(fields[1])
        except ValueError:
            continue
        if m is None:
            continue
        lines.append(NistLine(wavelength, float(m.group(1)), fields[2], m.group(2).strip()))
    lines.sort(key=lambda line: line.wavelength)
    return lines


def load_lamp_lines(
    ref_dir: Path, lamps: list[str], wavelength_range: tuple[float, float] | None = None
) -> list[tuple[float, float]]:
    """NIST lines of the elements in ``lamps`` as (air wavelength Å, NIST relative intensity).

    ``lamps`` takes lamp names as Goodman writes them in OBJECT (``"HgArNe"``, ``"CuHeAr"``)
    or bare element symbols. Use ``measure_line_strengths`` for strengths as a real lamp
    shows them through the instrument.
    """
    lo, hi = wavelength_range if wavelength_range else (-np.inf, np.inf)
    out = [
        (line.wavelength, line.intensity)
        for el in lamp_elements(lamps)
        for line in load_nist_lines(ref_dir, el)
        if lo <= line.wavelength <= hi
    ]
    return sorted(out)


# ---------------------------------------------------------------------- lamp spectra

_EVAL = {
    "chebyshev1d": chebyshev.chebval,
    "legendre1d": legendre.legval,
    "polynomial1d": polynomial.polyval,
}


@dataclass(frozen=True)
class ReferenceSpectrum:
    """A calibrated Goodman comparison-lamp spectrum (1x1, trimmed spectral axis)."""

    path: Path
    flux: np.ndarray
    function: str
    coefficients: tuple[float, ...]
    identified: tuple[tuple[float, float], ...]  # (pixel, air wavelength Å)
    wavmode: str
    grating: str
    filter2: str
    slit: str
    lamp: str
    lamps_on: tuple[str, ...]  # LAMP_* keywords that were 'TRUE'

    @property
    def npix(self) -> int:
        return int(self.flux.size)

    def wavelength(self, pixel: np.ndarray | float) -> np.ndarray:
        """Air wavelength (Å) at 0-based pixel(s) of the reference spectrum."""
        return np.asarray(_EVAL[self.function.lower()](pixel, self.coefficients))

    def pixel(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Inverse of ``wavelength`` (the solutions are monotonic over the array)."""
        grid = np.arange(-50.0, self.npix + 50.0, 0.25)
        return np.interp(wavelength, self.wavelength(grid), grid, left=np.nan, right=np.nan)


def find_reference_spectrum(ref_dir: Path, wavmode: str, lamp: str) -> Path:
    """Path of the library spectrum for a mode (``"400_M1"``) and lamp (``"HgArNe"``).

    The library names files ``goodman_comp_<mode without underscore>[_<filter>]_<lamp>``.
    """
    token = wavmode.replace("_", "")
    candidates = sorted((Path(ref_dir) / "ref_comp").glob(f"goodman_comp_{token}*_{lamp}.fits"))
    if not candidates:
        raise ReferenceDataError(f"no reference spectrum for {wavmode} {lamp} in {ref_dir}")
    return candidates[0]


def _floats(header: fits.Header, prefix: str) -> list[tuple[int, float]]:
    pat = re.compile(rf"{prefix}(\d{{3}})$")
    out = []
    for key in header:
        m = pat.match(key)
        if m:
            try:
                out.append((int(m.group(1)), float(header[key])))
            except (TypeError, ValueError):
                continue
    return sorted(out)


def load_reference_spectrum(path: Path) -> ReferenceSpectrum:
    """Read a ``ref_comp`` FITS file and its ``GSP_*`` wavelength solution."""
    with fits.open(path, memmap=False) as hdul:
        header = hdul[0].header
        flux = np.asarray(hdul[0].data, dtype=np.float64)
    function = str(header.get("GSP_FUNC", ""))
    if function.lower() not in _EVAL or flux.ndim != 1:
        raise ReferenceDataError(f"{path.name}: unsupported wavelength model {function!r}")
    coefficients = tuple(v for _, v in _floats(header, "GSP_C"))
    pixels = dict(_floats(header, "GSP_P"))
    waves = dict(_floats(header, "GSP_A"))
    identified = tuple((pixels[i], waves[i]) for i in sorted(pixels) if i in waves and waves[i] > 0)
    lamps_on = tuple(
        k
        for k in ("LAMP_HGA", "LAMP_NE", "LAMP_AR", "LAMP_FE", "LAMP_CU")
        if str(header.get(k, "")).upper() == "TRUE"
    )
    return ReferenceSpectrum(
        path=Path(path),
        flux=flux,
        function=function,
        coefficients=coefficients,
        identified=identified,
        wavmode=str(header.get("WAVMODE", "")),
        grating=str(header.get("GRATING", "")),
        filter2=str(header.get("FILTER2", "")),
        slit=str(header.get("SLIT", "")),
        lamp=str(header.get("OBJECT", "")),
        lamps_on=lamps_on,
    )


def _rolling_min(values: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    padded = np.pad(values, (half, half), mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1).min(axis=1)


def measured_fwhm(ref: ReferenceSpectrum) -> float:
    """Median FWHM (reference pixels) of the identified lines, from their second moments."""
    base = _rolling_min(ref.flux, 41)
    widths = []
    for pix, _ in ref.identified:
        c = round(pix)
        if c - 6 < 0 or c + 7 > ref.npix:
            continue
        seg = ref.flux[c - 6 : c + 7] - base[c - 6 : c + 7]
        if seg.sum() <= 0:
            continue
        x = np.arange(c - 6, c + 7, dtype=float)
        mean = float(np.sum(seg * x) / seg.sum())
        var = float(np.sum(seg * (x - mean) ** 2) / seg.sum())
        if var > 0:
            widths.append(2.3548 * np.sqrt(var))
    return float(np.median(widths)) if widths else 3.5


class LineStrength(NamedTuple):
    wavelength: float  # air, Å
    strength: float  # relative to the strongest line of the lamp (1.0)
    species: str


def measure_line_strengths(
    ref: ReferenceSpectrum, lines: Sequence[NistLine], min_strength: float = 2e-4
) -> list[LineStrength]:
    """Strengths of ``lines`` as the reference lamp spectrum shows them.

    Fits the continuum-subtracted reference spectrum with one Gaussian per candidate line
    at its catalogue position (shared measured width) and non-negative amplitudes, so
    blends are shared out rather than counted twice and lines the lamp does not emit
    drop out. Returns lines with fitted strength >= ``min_strength`` of the strongest.
    """
    x = np.arange(ref.npix, dtype=float)
    lo, hi = ref.wavelength(np.array([2.0, ref.npix - 3.0]))
    cand = [line for line in lines if lo <= line.wavelength <= hi]
    if not cand:
        return []
    pos = ref.pixel(np.array([line.wavelength for line in cand]))
    fwhm = measured_fwhm(ref)
    sigma = fwhm / 2.3548
    # Only lines sitting on a significant local peak: otherwise catalogue lines in the
    # scattered-light wings of strong lines would soak up that light in the fit.
    f = ref.flux
    peaks = np.flatnonzero((f[1:-1] > f[:-2]) & (f[1:-1] >= f[2:])) + 1
    step = np.diff(f)
    noise = 1.4826 * float(np.median(np.abs(step - np.median(step)))) / np.sqrt(2.0)
    peaks = peaks[f[peaks] - _rolling_min(f, 15)[peaks] > 5.0 * max(noise, 1e-12)]
    if peaks.size == 0:
        return []
    near = np.min(np.abs(pos[:, None] - peaks[None, :]), axis=1) <= 0.6 * fwhm
    cand = [line for line, ok in zip(cand, near, strict=True) if ok]
    pos = pos[near]
    if not cand:
        return []
    y = ref.flux - _rolling_min(ref.flux, 41)
    design = np.exp(-0.5 * ((x[:, None] - pos[None, :]) / sigma) ** 2)
    active = np.ones(len(cand), dtype=bool)
    amp = np.zeros(len(cand))
    for _ in range(100):  # active-set NNLS: drop negative amplitudes and refit
        sol, *_ = np.linalg.lstsq(design[:, active], y, rcond=None)
        idx = np.flatnonzero(active)
        if np.all(sol > 0):
            amp[:] = 0.0
            amp[idx] = sol
            break
        active[idx[sol <= 0]] = False
    peak = amp.max() if amp.size else 0.0
    if peak <= 0:
        return []
    out = [
        LineStrength(line.wavelength, float(a / peak), line.species)
        for line, a in zip(cand, amp, strict=True)
        if a / peak >= min_strength
    ]
    return sorted(out)
