"""Long-slit spectroscopy after the 2-D CCD calibration: slit, trace, extraction, wavelengths.

Every step is a pure function of arrays and small frozen dataclasses (picklable, no I/O
except ``load_lamp_template``), so a task graph can run and cache them independently.
Inputs are 2-D float frames already trimmed and bias-subtracted, dispersion along x
(NAXIS1), with a variance frame and an optional boolean mask (True = bad pixel). Pixel
coordinates are 0-based indices of those arrays.
"""

from ._fit import RobustFit
from .extract import (
    Aperture,
    Extraction,
    NoiseModel,
    SkyBands,
    SkyModel,
    default_sky_bands,
    extract_aperture,
    extract_optimal,
    fit_sky,
)
from .pipeline import LongslitResult, reduce_longslit
from .resample import (
    LinearSpectrum,
    extraction_cards,
    resample_linear,
    solution_cards,
    to_hdulist,
)
from .slit import (
    SlitEdges,
    Target,
    TargetSearch,
    collapse,
    find_slit_edges,
    find_targets,
    nan_masked,
)
from .trace import Trace, TraceBin, fit_trace
from .wavecal import (
    ArcLine,
    CatalogueLine,
    FirstGuess,
    LampTemplate,
    LineFits,
    WavelengthSolution,
    calibrate_wavelength,
    cross_correlate,
    find_lines,
    fit_lines,
    load_lamp_template,
)

__all__ = [
    "Aperture",
    "ArcLine",
    "CatalogueLine",
    "Extraction",
    "FirstGuess",
    "LampTemplate",
    "LineFits",
    "LinearSpectrum",
    "LongslitResult",
    "NoiseModel",
    "RobustFit",
    "SkyBands",
    "SkyModel",
    "SlitEdges",
    "Target",
    "TargetSearch",
    "Trace",
    "TraceBin",
    "WavelengthSolution",
    "calibrate_wavelength",
    "collapse",
    "cross_correlate",
    "default_sky_bands",
    "extract_aperture",
    "extract_optimal",
    "extraction_cards",
    "find_lines",
    "find_slit_edges",
    "find_targets",
    "fit_lines",
    "fit_sky",
    "fit_trace",
    "load_lamp_template",
    "nan_masked",
    "reduce_longslit",
    "resample_linear",
    "solution_cards",
    "to_hdulist",
]
