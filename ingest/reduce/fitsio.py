"""Writing and reading reduced products as multi-extension FITS.

Layout (what archive users and the VO services expect of a calibrated frame):
``PRIMARY`` (no data: the raw header with the calibration's updates and the provenance
cards), ``SCI`` (float32 data), ``ERR`` (float32 1-sigma uncertainty, the square root of the
variance plane, same unit as SCI) and ``MASK`` (bit flags, see :class:`Flag`). Image
extensions repeat the WCS so any viewer that opens ``SCI`` alone places it on the sky.

Writes are atomic: the file is written under a temporary name in the target folder,
flushed to disk and renamed, so a reader never sees half a product and a crash leaves
the previous version intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ingest.reduce.ccd import CalibratedFrame, Flag, apply_header_updates

# keys that describe the raw array, not the product: astropy rewrites what it needs
_STRUCTURAL = frozenset(
    {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE", "PCOUNT",
     "GCOUNT", "CHECKSUM", "DATASUM", "EXTNAME", "XTENSION"}
)  # fmt: skip
_WCS_PREFIXES = ("CTYPE", "CUNIT", "CRPIX", "CRVAL", "CD1_", "CD2_", "CDELT", "PC1_", "PC2_")
_WCS_KEYS = ("WCSAXES", "RADESYS", "EQUINOX", "LONPOLE", "LATPOLE", "MJDREF")

Provenance = Mapping[str, Any] | Iterable[tuple[str, Any, str]]


def _wcs_cards(header: fits.Header) -> list[tuple[str, Any, str]]:
    return [
        (k, header[k], header.comments[k])
        for k in header
        if k.startswith(_WCS_PREFIXES) or k in _WCS_KEYS
    ]


def _provenance_cards(provenance: Provenance) -> list[tuple[str, Any, str]]:
    if isinstance(provenance, Mapping):
        out = []
        for key, value in provenance.items():
            if isinstance(value, tuple):
                out.append((key, value[0], value[1] if len(value) > 1 else ""))
            else:
                out.append((key, value, ""))
        return out
    return [(k, v, c) for k, v, c in provenance]


def product_hdul(
    frame: CalibratedFrame,
    header: fits.Header | Mapping[str, Any] | None = None,
    *,
    provenance: Provenance = (),
    extra_cards: Mapping[str, tuple[Any, str]] | None = None,
) -> fits.HDUList:
    """Build the product's HDU list (pure: nothing is written)."""
    primary = fits.Header()
    if header is not None:
        src = header if isinstance(header, fits.Header) else fits.Header(dict(header))
        for card in src.cards:
            if card.keyword not in _STRUCTURAL and card.keyword not in ("", "COMMENT"):
                primary.append(card, end=True)
    apply_header_updates(primary, frame.header_updates)
    if extra_cards:
        apply_header_updates(primary, dict(extra_cards))
    for key, value, comment in _provenance_cards(provenance):
        if len(key) > 8 and not key.startswith("HIERARCH"):
            key = f"HIERARCH {key}"
        primary[key] = (value, comment)
    unit = str(primary.get("BUNIT", ""))
    wcs = _wcs_cards(primary)

    mask = np.asarray(frame.mask)
    mask_dtype = np.uint8 if int(mask.max(initial=0)) < 256 else np.uint16
    sci_h = fits.Header([("EXTNAME", "SCI", "calibrated data"), ("BUNIT", unit, ""), *wcs])
    err_h = fits.Header(
        [("EXTNAME", "ERR", "1-sigma uncertainty of SCI"), ("BUNIT", unit, ""), *wcs]
    )
    mask_h = fits.Header([("EXTNAME", "MASK", "bit flags, 0 = good"), *wcs])
    for flag in Flag:
        mask_h[f"MASKB{flag.value.bit_length() - 1}"] = (flag.name, f"bit value {flag.value}")
    return fits.HDUList(
        [
            fits.PrimaryHDU(header=primary),
            fits.ImageHDU(np.asarray(frame.data, dtype=np.float32), header=sci_h),
            fits.ImageHDU(
                np.sqrt(np.maximum(np.asarray(frame.variance, dtype=np.float32), 0.0)),
                header=err_h,
            ),
            fits.ImageHDU(mask.astype(mask_dtype), header=mask_h),
        ]
    )


def write_product(
    path: str | os.PathLike[str],
    frame: CalibratedFrame,
    header: fits.Header | Mapping[str, Any] | None = None,
    *,
    provenance: Provenance = (),
    extra_cards: Mapping[str, tuple[Any, str]] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``frame`` as PRIMARY/SCI/ERR/MASK atomically; returns the final path.

    ``header`` is the raw primary header (its WCS reference pixel is corrected by the
    frame's ``header_updates``); ``provenance`` cards (a mapping ``key -> value`` or
    ``(value, comment)``, or ``(key, value, comment)`` triples: input files and their
    checksums, software version, calibration file names) go into PRIMARY. Every HDU gets
    CHECKSUM/DATASUM so corruption in the archive is detectable.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    hdul = product_hdul(frame, header, provenance=provenance, extra_cards=extra_cards)
    write_atomic(hdul, target)
    return target


def write_atomic(hdul: fits.HDUList, target: Path) -> tuple[int, str]:
    """Write under a temporary name in the target folder, flush to disk, then rename;
    returns the size and SHA-256 of what was written.

    A crash leaves either no file or the whole one, never a half-written product under
    its real name, and what a database row points at is on disk before the row exists.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "w+b") as fh:
            hdul.writeto(fh, checksum=True, output_verify="exception")
            fh.flush()
            os.fsync(fh.fileno())
            fh.seek(0)
            digest = hashlib.sha256()
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
            size = fh.tell()
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return size, digest.hexdigest()


def read_product(path: str | os.PathLike[str]) -> tuple[CalibratedFrame, fits.Header]:
    """Read a product written by :func:`write_product` back into memory."""
    with fits.open(path, memmap=False, checksum=True) as hdul:
        primary = hdul[0].header.copy()
        data = np.asarray(hdul["SCI"].data, dtype=np.float32)
        err = np.asarray(hdul["ERR"].data, dtype=np.float32)
        mask = np.asarray(hdul["MASK"].data).astype(np.uint16)
    return CalibratedFrame(data, err * err, mask, {}), primary
