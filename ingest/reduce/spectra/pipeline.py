"""One long-slit science frame plus its arc, reduced to a calibrated 1-D spectrum.

A convenience chain of the pure steps, for callers that want the default choices; each
step stays callable on its own (a Dask graph may split them, e.g. to share one arc
solution between exposures traced the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .extract import (
    Aperture,
    Extraction,
    NoiseModel,
    SkyModel,
    default_sky_bands,
    extract_aperture,
    extract_optimal,
    fit_sky,
)
from .resample import LinearSpectrum, resample_linear
from .slit import SlitEdges, TargetSearch, find_slit_edges, find_targets
from .trace import Trace, fit_trace
from .wavecal import LampTemplate, WavelengthSolution, calibrate_wavelength


@dataclass(frozen=True)
class LongslitResult:
    edges: SlitEdges
    targets: TargetSearch
    trace: Trace
    sky: SkyModel
    optimal: Extraction
    simple: Extraction  # aperture sum with the same trace, aperture and sky
    arc: Extraction  # the arc summed along the same trace and aperture
    solution: WavelengthSolution
    spectrum: LinearSpectrum  # the optimal extraction on a linear wavelength grid


def reduce_longslit(
    science: np.ndarray,
    science_variance: np.ndarray,
    arc: np.ndarray,
    arc_variance: np.ndarray,
    template: LampTemplate,
    *,
    binning: int,
    noise: NoiseModel | None = None,
    science_mask: np.ndarray | None = None,
    arc_mask: np.ndarray | None = None,
    offset: float = 0.0,
    target_row: float | None = None,
    edges: SlitEdges | None = None,
    n_fwhm: float = 2.0,
) -> LongslitResult:
    """Reduce 2-D calibrated frames (trimmed, bias-subtracted; masks True = bad).

    The brightest target is extracted unless ``target_row`` picks another; the others
    are kept out of the sky bands. ``edges`` are best measured once on a flat (its
    plateau is bright); by default they come from the science frame's sky. ``binning``
    and ``offset`` are passed to ``calibrate_wavelength``.
    """
    if edges is None:
        edges = find_slit_edges(science, science_mask)
    targets = find_targets(science, edges, science_mask)
    if target_row is None:
        tgt = targets.best
    else:
        tgt = min(targets.targets, key=lambda t: abs(t.row - target_row))
    trace = fit_trace(
        science, science_variance, tgt.row, science_mask, column=tgt.column, fwhm=tgt.fwhm
    )
    bands = default_sky_bands(trace, science.shape[0], edges, [t.row for t in targets.targets])
    sky = fit_sky(science, science_variance, trace, bands, science_mask, edges=edges)
    aperture = Aperture.around(trace, n_fwhm)
    optimal = extract_optimal(
        science, science_variance, trace, aperture, science_mask, sky=sky, noise=noise
    )
    simple = extract_aperture(science, science_variance, trace, aperture, science_mask, sky=sky)
    arc1d = extract_aperture(arc, arc_variance, trace, aperture, arc_mask)
    solution = calibrate_wavelength(
        arc1d.flux, arc1d.variance, template, binning=binning, offset=offset, mask=arc1d.mask
    )
    spectrum = resample_linear(optimal.flux, optimal.variance, solution, optimal.mask)
    return LongslitResult(edges, targets, trace, sky, optimal, simple, arc1d, solution, spectrum)
