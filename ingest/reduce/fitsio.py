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
    Plain images (every 2-D product) are encoded here (see :class:`_Stream`); anything
    else goes through astropy's writer.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    parts = _plain_images(hdul)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "w+b") as fh:
            if parts is not None:
                stream = _Stream(fh.fileno())
                when = datetime.now().isoformat()[:19]  # astropy's checksum timestamp
                for header, data in parts:
                    _encode_hdu(stream, header, data, when)
                size, sha = stream.close()
            else:
                hdul.writeto(fh, checksum=True, output_verify="exception")
                fh.flush()
                fh.seek(0)
                digest = hashlib.sha256()
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                size, sha = fh.tell(), digest.hexdigest()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return size, sha


class _Stream:
    """Sequential writer of a product's bytes through one small page-aligned buffer,
    hashed on the way, with the file opened for direct I/O where the system allows.

    A night writes hundreds of megabytes of products that nothing reads back soon:
    through the page cache each byte is copied into freshly allocated cache pages and
    flushed again by ``fsync``, which costs more CPU than encoding it; a direct write
    hands the buffer to the disk as it is. Big-endian conversion happens as data is
    copied into the buffer, so no converted copy of a whole plane exists either. Where
    direct I/O is refused (no ``O_DIRECT``, a file system without it), the same bytes
    go through the page cache.
    """

    _ALIGN = 4096
    _SIZE = 4 << 20

    def __init__(self, fd: int) -> None:
        self.fd = fd
        store = np.empty(self._SIZE + self._ALIGN, dtype=np.uint8)
        start = -store.ctypes.data % self._ALIGN
        self.buf = store[start : start + self._SIZE]
        self.fill = 0
        self.size = 0
        self.digest = hashlib.sha256()
        self.direct = _set_direct(fd, True)

    def put_bytes(self, data: bytes) -> None:
        view = np.frombuffer(data, dtype=np.uint8)
        while view.size:
            n = min(view.size, self._SIZE - self.fill)
            self.buf[self.fill : self.fill + n] = view[:n]
            self._advance(n)
            view = view[n:]

    def put_array(self, data: np.ndarray) -> None:
        """The array's elements in big-endian order (its row-major bytes in a FITS file)."""
        flat = np.ascontiguousarray(data).reshape(-1)
        big = flat.dtype.newbyteorder(">")
        size = flat.dtype.itemsize
        while flat.size:  # the buffer's free space is a whole number of elements: see below
            n = min(flat.size, (self._SIZE - self.fill) // size)
            if n == 0:  # not reached with FITS's 2880-byte blocks; never loop forever
                self._flush()
                continue
            out = self.buf[self.fill : self.fill + n * size].view(big)
            np.copyto(out, flat[:n])
            self._advance(n * size)
            flat = flat[n:]

    def _advance(self, n: int) -> None:
        self.fill += n
        if self.fill == self._SIZE:
            self._flush()

    def _flush(self) -> None:
        """Write the buffer; direct writes need whole aligned blocks, so a last partial
        block goes through the page cache."""
        chunk = self.buf[: self.fill]
        self.digest.update(chunk)
        whole = self.fill - self.fill % self._ALIGN
        if self.direct and whole:
            try:
                _write_all(self.fd, chunk[:whole])
            except OSError:  # refused after all: the rest, this block too, cached
                self.direct = _set_direct(self.fd, False)
                whole = 0
        else:
            whole = 0
        if whole < self.fill:
            if self.direct:
                self.direct = _set_direct(self.fd, False)
            _write_all(self.fd, chunk[whole:])
        self.size += self.fill
        self.fill = 0

    def close(self) -> tuple[int, str]:
        if self.fill:
            self._flush()
        return self.size, self.digest.hexdigest()


def _set_direct(fd: int, on: bool) -> bool:
    """Switch direct I/O on ``fd`` on or off; returns whether it is on."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        import fcntl

        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | flag if on else flags & ~flag)
    except OSError:
        return False
    return on


def _write_all(fd: int, data: np.ndarray) -> None:
    view = memoryview(data)  # type: ignore[arg-type]
    while view.nbytes:
        view = view[os.write(fd, view) :]


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


def _encode_hdu(stream: _Stream, header: fits.Header, data: np.ndarray | None, when: str) -> None:
    """Header block and data unit of one HDU with its CHECKSUM and DATASUM cards, set as
    astropy's ``add_checksum`` sets them (same places, values and comments)."""
    datasum = _datasum(data) if data is not None and data.size else 0
    header["DATASUM"] = (str(datasum), f"data unit checksum updated {when}")
    header.set("CHECKSUM", "0" * 16, f"HDU checksum updated {when}", before="DATASUM")
    text = header.tostring().encode("ascii")
    total = _ones_complement_sum(np.frombuffer(text, np.uint8), datasum)
    header["CHECKSUM"] = _encode_checksum(~total & 0xFFFFFFFF)
    stream.put_bytes(header.tostring().encode("ascii"))
    if data is not None and data.size:
        stream.put_array(data)
        stream.put_bytes(bytes(-data.nbytes % _BLOCK))


def _datasum(data: np.ndarray) -> int:
    """The FITS data checksum of ``data`` as it is stored (big-endian).

    The file's 32-bit words are the 4-byte elements' own bit patterns, so those are
    summed in place; other element sizes are summed from a big-endian copy.
    """
    if data.dtype.itemsize == 4 and data.dtype.isnative:
        words = np.ascontiguousarray(data).reshape(-1).view(np.uint32)
        return _ones_complement_sum(np.empty(0, np.uint8), int(words.sum(dtype=np.uint64)))
    big = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder(">"))
    return _ones_complement_sum(big.reshape(-1).view(np.uint8))


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
