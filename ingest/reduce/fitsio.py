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
from datetime import datetime
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
    Plain images (every 2-D product) are encoded here, each data unit converted to
    big-endian once and checksummed and hashed from that buffer; anything else goes
    through astropy's writer.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    parts = _plain_images(hdul)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "w+b") as fh:
            digest = hashlib.sha256()
            if parts is not None:
                when = datetime.now().isoformat()[:19]  # astropy's checksum timestamp
                for header, data in parts:
                    for chunk in _encode_hdu(header, data, when):
                        fh.write(chunk)
                        digest.update(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            else:
                hdul.writeto(fh, checksum=True, output_verify="exception")
                fh.flush()
                os.fsync(fh.fileno())
                fh.seek(0)
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


# FITS BITPIX of the array types stored as they are (no BZERO/BSCALE scaling)
_BITPIX = {"u1": 8, "i2": 16, "i4": 32, "i8": 64, "f4": -32, "f8": -64}
_BLOCK = 2880


def _plain_images(hdul: fits.HDUList) -> list[tuple[fits.Header, np.ndarray | None]] | None:
    """Header and data of every HDU when all are unscaled images whose header already
    describes their data (as astropy builds them from arrays); otherwise None."""
    parts: list[tuple[fits.Header, np.ndarray | None]] = []
    for n, hdu in enumerate(hdul):
        if type(hdu) is not (fits.PrimaryHDU if n == 0 else fits.ImageHDU):
            return None
        header, data = hdu.header, hdu.data
        if "BZERO" in header or "BSCALE" in header or "BLANK" in header:
            return None
        if data is None:
            if header.get("NAXIS") != 0:
                return None
        else:
            code = data.dtype.kind + str(data.dtype.itemsize)
            if (
                _BITPIX.get(code) != header.get("BITPIX")
                or header.get("NAXIS") != data.ndim
                or any(header.get(f"NAXIS{i}") != s for i, s in enumerate(data.shape[::-1], 1))
            ):
                return None
        parts.append((header, data))
    if len(parts) > 1:  # extensions follow: EXTEND = T, where astropy puts it
        primary = parts[0][0]
        if "EXTEND" not in primary:
            naxis = primary["NAXIS"]
            primary.set("EXTEND", True, after=f"NAXIS{naxis}" if naxis else "NAXIS")
        elif not primary["EXTEND"]:
            primary["EXTEND"] = True
    return parts


def _encode_hdu(header: fits.Header, data: np.ndarray | None, when: str) -> list[Any]:
    """Header block and data unit of one HDU with its CHECKSUM and DATASUM cards, set as
    astropy's ``add_checksum`` sets them (same places, values and comments)."""
    chunks: list[Any] = []
    datasum = 0
    if data is not None and data.size:
        big = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder(">"))
        raw = big.reshape(-1).view(np.uint8)
        datasum = _ones_complement_sum(raw)
        pad = -raw.size % _BLOCK
        chunks = [raw, bytes(pad)] if pad else [raw]
    header["DATASUM"] = (str(datasum), f"data unit checksum updated {when}")
    header.set("CHECKSUM", "0" * 16, f"HDU checksum updated {when}", before="DATASUM")
    text = header.tostring().encode("ascii")
    total = _ones_complement_sum(np.frombuffer(text, np.uint8), datasum)
    header["CHECKSUM"] = _encode_checksum(~total & 0xFFFFFFFF)
    return [header.tostring().encode("ascii"), *chunks]


def _ones_complement_sum(raw: np.ndarray, start: int = 0) -> int:
    """32-bit ones' complement sum of big-endian words (the FITS checksum arithmetic);
    a last partial word is padded with zeros."""
    s = start
    whole = raw.size - raw.size % 4
    if whole < raw.size:
        s += int.from_bytes(bytes(raw[whole:]) + bytes(4 - raw.size + whole), "big")
    s += int(raw[:whole].view(">u4").sum(dtype=np.uint64))
    while s >> 32:
        s = (s & 0xFFFFFFFF) + (s >> 32)
    return s


_EXCLUDED = frozenset(b":;<=>?@[\\]^_`")  # punctuation the checksum text must avoid


def _encode_checksum(value: int) -> str:
    """The 16-character ASCII form of a checksum (FITS checksum convention, A.7.2)."""
    asc = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = byte // 4 + ord("0"), byte % 4
        ch = [quotient + remainder, quotient, quotient, quotient]
        for j in (0, 2):
            while ch[j] in _EXCLUDED or ch[j + 1] in _EXCLUDED:
                ch[j] += 1
                ch[j + 1] -= 1
        for j in range(4):
            asc[4 * j + i] = ch[j]
    return bytes(asc[(i + 15) % 16] for i in range(16)).decode("ascii")


def read_product(path: str | os.PathLike[str]) -> tuple[CalibratedFrame, fits.Header]:
    """Read a product written by :func:`write_product` back into memory."""
    with fits.open(path, memmap=False, checksum=True) as hdul:
        primary = hdul[0].header.copy()
        data = np.asarray(hdul["SCI"].data, dtype=np.float32)
        err = np.asarray(hdul["ERR"].data, dtype=np.float32)
        mask = np.asarray(hdul["MASK"].data).astype(np.uint16)
    return CalibratedFrame(data, err * err, mask, {}), primary
