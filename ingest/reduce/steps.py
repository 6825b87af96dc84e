"""The steps of a reduction: pure functions of frames, masters and settings.

Each takes and returns plain values (arrays, headers, frozen dataclasses) and touches no
database, so the graph runner or a Dask worker can call it anywhere; the only I/O is
reading raw frames, archived products and the lamp library. A step that makes a
product returns :class:`Built`: the value later steps use, the HDUs to archive and the
quality figures that become columns of ``archive.products``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ingest import refdata
from ingest.reduce.ccd import (
    DEFECT_FLAGS,
    CalibratedFrame,
    Flag,
    apply_header_updates,
    calibrate_frame,
    prepare_calibration,
)
from ingest.reduce.combine import bad_pixel_mask, make_master_bias, make_master_flat
from ingest.reduce.fitsio import product_hdul, read_product
from ingest.reduce.imaging import image_quality
from ingest.reduce.spectra import (
    Aperture,
    Extraction,
    LampTemplate,
    LinearSpectrum,
    NoiseModel,
    SlitEdges,
    Trace,
    WavelengthSolution,
    calibrate_wavelength,
    default_sky_bands,
    extract_aperture,
    extract_optimal,
    extraction_cards,
    find_slit_edges,
    find_targets,
    fit_sky,
    fit_trace,
    load_lamp_template,
    nan_masked,
    resample_linear,
    to_hdulist,
)

# Spectra carry no celestial WCS, so the seeing along the slit needs the plate scale.
GOODMAN_SCALE_ARCSEC = 0.15  # per unbinned pixel
# Pixels extraction must not trust; UNILLUMINATED is left out so the slit edges show.
SPECTRUM_BAD = DEFECT_FLAGS | Flag.SATURATED | Flag.COSMIC_RAY
# Raw keywords a 1-D spectrum keeps: what the observation was, not how the CCD was read.
SPECTRUM_KEYS = (
    "OBJECT", "OBSTYPE", "DATE-OBS", "EXPTIME", "RA", "DEC", "OBSRA", "OBSDEC", "EQUINOX",
    "AIRMASS", "TELESCOP", "OBSERVAT", "INSTRUME", "INSTCONF", "WAVMODE", "GRATING",
    "FILTER", "FILTER2", "SLIT", "CAM_TARG", "GRT_TARG", "CCDSUM", "GAIN", "RDNOISE",
    "PROPID", "OBSERVER",
)  # fmt: skip


@dataclass(frozen=True)
class RawFrame:
    data: np.ndarray
    header: fits.Header


@dataclass
class Built:
    """A step's product: the value later steps use, and what to write (None when the
    product was loaded from the archive rather than made)."""

    value: Any
    hdul: fits.HDUList | None = None
    qa: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Extracted:
    """A spectrum extracted along its trace, before any wavelength calibration."""

    edges: SlitEdges
    trace: Trace
    aperture: Aperture
    extraction: Extraction  # the one the settings asked for
    binning: int
    fwhm_arcsec: float


@dataclass(frozen=True)
class Calibrated:
    extracted: Extracted
    arc: Extraction
    solution: WavelengthSolution
    spectrum: LinearSpectrum


def read_raw(path: str) -> RawFrame:
    """The raw pixels as unsigned integers, as astropy would scale them.

    Goodman frames store unsigned 16-bit counts the FITS way (signed, BZERO = 32768):
    those are read straight into one array whose bytes are swapped and sign bit flipped
    in place, which gives astropy's uint16 values without its copies. Other encodings go
    through astropy's own scaling.
    """
    with open(path, "rb") as fh:
        header = _primary_header(fh)
        if header is not None and _unsigned16(header):
            shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
            data = np.fromfile(fh, dtype=">u2", count=shape[0] * shape[1])
            if data.size == shape[0] * shape[1]:
                data = data.byteswap(inplace=True).view(data.dtype.newbyteorder())
                data ^= np.uint16(0x8000)
                return RawFrame(data.reshape(shape), header)
    with fits.open(path, memmap=False) as hdul:
        return RawFrame(np.asarray(hdul[0].data), hdul[0].header.copy())


def _primary_header(fh: Any) -> fits.Header | None:
    """The primary header, leaving ``fh`` at the start of its data; None if unreadable."""
    blocks = []
    while block := fh.read(2880):
        if len(block) < 2880:
            return None
        blocks.append(block)
        if any(block[i : i + 8] == b"END     " for i in range(0, 2880, 80)):
            try:
                return fits.Header.fromstring(b"".join(blocks).decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                return None
    return None


def _unsigned16(header: fits.Header) -> bool:
    """Whether the primary array is a plain 2-D image of unsigned 16-bit counts."""
    return (
        header.get("SIMPLE") is True
        and header.get("BITPIX") == 16
        and header.get("NAXIS") == 2
        and header.get("BZERO") == 32768
        and header.get("BSCALE", 1) == 1
        and "BLANK" not in header
        and not header.get("GROUPS", False)
    )


def read_header(path: str) -> fits.Header:
    return fits.getheader(path)


def load_frame_product(path: str) -> Built:
    frame, _header = read_product(path)
    return Built(frame)


def build_master_bias(raws: Sequence[RawFrame]) -> Built:
    frames = [prepare_calibration(r.data, r.header) for r in raws]
    master = make_master_bias(frames)
    header = apply_header_updates(raws[0].header.copy(), frames[0].header_updates)
    extra = {"OBJECT": ("master bias", ""), "NCOMBINE": (len(frames), "bias frames combined")}
    return Built(
        master, product_hdul(master, header, extra_cards=extra), {"n_combined": len(frames)}
    )


def build_master_flat(
    raws: Sequence[RawFrame],
    master_bias: Built | None,
    normalisation: str,
    max_saturated_fraction: float,
) -> Built:
    """Flats the engine leaves out (saturated, empty) are named in ``FLREJnnn`` cards, so
    the product itself says why it combines fewer frames than its provenance lists."""
    bias = master_bias.value if master_bias is not None else None
    frames = [prepare_calibration(r.data, r.header, master_bias=bias) for r in raws]
    made = make_master_flat(
        frames, normalization=normalisation, max_saturated_fraction=max_saturated_fraction
    )
    header = apply_header_updates(raws[0].header.copy(), frames[0].header_updates)
    extra: dict[str, tuple[Any, str]] = {"OBJECT": ("master flat", "")}
    for n, rejected in enumerate(made.rejected[:99], start=1):
        when = raws[rejected.index].header.get("DATE-OBS")
        extra[f"FLREJ{n:03d}"] = (f"left out {when}: {rejected.reason}"[:68], "")
    qa = {"n_combined": len(made.used)}
    return Built(made.flat, product_hdul(made.flat, header, extra_cards=extra), qa)


def bad_pixels(master_bias: Built | None, master_flat: Built | None) -> np.ndarray | None:
    if master_bias is None and master_flat is None:
        return None
    return bad_pixel_mask(
        master_bias.value if master_bias is not None else None,
        master_flat.value if master_flat is not None else None,
    ).mask


def build_reduced(
    raw: RawFrame,
    master_bias: Built | None,
    master_flat: Built | None,
    bpm: np.ndarray | None,
    cosmics: bool,
    imaging: bool,
) -> Built:
    """A calibrated science frame; images also get their sky and PSF measured here,
    where the mask and variance are at hand, so QA never needs the file again."""
    frame = calibrate_frame(
        raw.data,
        raw.header,
        master_bias.value if master_bias is not None else None,
        master_flat.value if master_flat is not None else None,
        bpm,
        cosmics=cosmics,
    )
    updates = frame.header_updates
    qa: dict[str, Any] = {}
    if "NCREVENT" in updates:
        qa["n_cosmics"] = int(updates["NCREVENT"][0])
    extra: dict[str, tuple[Any, str]] = {}
    if imaging:
        header = apply_header_updates(raw.header.copy(), updates)
        quality = image_quality(frame.data, header, mask=frame.mask, variance=frame.variance)
        extra = quality.header_cards()
        qa.update(
            sky_level=quality.sky_level,
            sky_noise=quality.sky_noise,
            n_stars=quality.n_sources,
            fwhm_arcsec=quality.fwhm_arcsec,
        )
    return Built(frame, product_hdul(frame, raw.header, extra_cards=extra), qa)


def calibrate_arc(
    raw: RawFrame, master_bias: Built | None, master_flat: Built | None, bpm: np.ndarray | None
) -> CalibratedFrame:
    """The arc through the science frame's own masters: the same pixels, the same slit
    illumination, so its lines sit where the science frame's would."""
    return calibrate_frame(
        raw.data,
        raw.header,
        master_bias.value if master_bias is not None else None,
        master_flat.value if master_flat is not None else None,
        bpm,
    )


def load_template(home: str, wavmode: str, lamp: str) -> LampTemplate:
    """A step of its own so the graph reads the lamp library once per mode and lamp."""
    return load_lamp_template(refdata.ensure_reference_data(Path(home)), wavmode, lamp)


def _binning(header: Mapping[str, Any]) -> tuple[int, int]:
    parts = str(header.get("CCDSUM", "1 1")).split()
    return (int(parts[0]), int(parts[-1])) if parts else (1, 1)


def extract_spectrum(
    reduced: Built, header: fits.Header, extraction_type: str, width: float
) -> Extracted:
    """The steps of ``spectra.reduce_longslit`` that need no arc, so a 1-D spectrum
    exists even when the wavelength calibration fails."""
    frame: CalibratedFrame = reduced.value
    data, var = frame.data, frame.variance
    mask = (frame.mask & np.uint16(SPECTRUM_BAD)) != 0
    lit = nan_masked(data, mask)  # one copy for both searches
    edges = find_slit_edges(lit)
    targets = find_targets(lit, edges)
    del lit
    best = targets.best
    trace = fit_trace(data, var, best.row, mask, column=best.column, fwhm=best.fwhm)
    bands = default_sky_bands(trace, data.shape[0], edges, [t.row for t in targets.targets])
    sky = fit_sky(data, var, trace, bands, mask, edges=edges)
    aperture = Aperture.around(trace, width)
    if extraction_type == "optimal":
        noise = NoiseModel(gain=1.0, read_noise=float(header["RDNOISE"]))
        extraction = extract_optimal(data, var, trace, aperture, mask, sky=sky, noise=noise)
    else:
        extraction = extract_aperture(data, var, trace, aperture, mask, sky=sky)
    bx, by = _binning(header)
    return Extracted(edges, trace, aperture, extraction, bx, trace.fwhm * GOODMAN_SCALE_ARCSEC * by)


def calibrate_spectrum(
    extracted: Extracted, arc: CalibratedFrame, template: LampTemplate
) -> Calibrated:
    """The arc summed along the science trace and aperture, so the solution holds for
    the rows the science light came through despite the line tilt along the slit."""
    arc_mask = (arc.mask & np.uint16(DEFECT_FLAGS | Flag.SATURATED)) != 0
    arc1d = extract_aperture(arc.data, arc.variance, extracted.trace, extracted.aperture, arc_mask)
    solution = calibrate_wavelength(
        arc1d.flux, arc1d.variance, template, binning=extracted.binning, mask=arc1d.mask
    )
    ext = extracted.extraction
    spectrum = resample_linear(ext.flux, ext.variance, solution, ext.mask)
    return Calibrated(extracted, arc1d, solution, spectrum)


def _observation_cards(header: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    return [(k, header[k], "") for k in SPECTRUM_KEYS if k in header]


def build_spectrum_1d(extracted: Extracted, header: fits.Header) -> Built:
    ext = extracted.extraction
    primary = fits.PrimaryHDU(ext.flux.astype(np.float32))
    for key, value, comment in [
        *_observation_cards(header),
        *extraction_cards(ext, extracted.trace),
        ("BUNIT", "electron", "summed along the slit, per detector column"),
        ("CTYPE1", "PIXEL", "column of the trimmed 2-D frame, 1-based"),
    ]:
        primary.header[key] = (value, comment)
    hdul = fits.HDUList(
        [
            primary,
            fits.ImageHDU(np.sqrt(ext.variance).astype(np.float32), name="ERROR"),
            fits.ImageHDU(ext.mask.astype(np.uint8), name="MASK"),
            fits.ImageHDU(ext.sky.astype(np.float32), name="SKY"),
        ]
    )
    qa = {"trace_rms_px": extracted.trace.rms, "fwhm_arcsec": extracted.fwhm_arcsec}
    return Built(extracted, hdul, qa)


def build_wavelength_calibrated(calibrated: Calibrated, header: fits.Header) -> Built:
    extracted, solution, spectrum = calibrated.extracted, calibrated.solution, calibrated.spectrum
    cards = [*_observation_cards(header), *extraction_cards(extracted.extraction, extracted.trace)]
    hdul = to_hdulist(spectrum, solution=solution, cards=cards, bunit="electron")
    wl = spectrum.wavelength
    half = 0.5 * spectrum.cdelt
    qa = {
        "em_min": float(wl.min() - half) * 1e-10,
        "em_max": float(wl.max() + half) * 1e-10,
        "wavecal_rms_px": solution.rms_pixel,
        "wavecal_rms_angstrom": solution.rms_angstrom,
        "n_lines_used": solution.n_used,
        "n_lines_rejected": solution.n_rejected,
        "trace_rms_px": extracted.trace.rms,
        "fwhm_arcsec": extracted.fwhm_arcsec,
    }
    return Built(calibrated, hdul, qa)
