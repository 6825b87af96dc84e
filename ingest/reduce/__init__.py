"""2-D reduction engine: CCD calibration, combining, cosmic rays, imaging QA, products.

Every step is a pure function of numpy arrays and header values (dicts, dataclasses): no
files, database or global state, so a task graph can schedule them anywhere. Calibrated
frames are :class:`CalibratedFrame` (data in electrons, variance, uint16 :class:`Flag`
mask, and the FITS cards the step changed); :mod:`ingest.reduce.fitsio` writes them.
"""

from ingest.reduce.ccd import (
    ADC_MAX,
    DEFECT_FLAGS,
    READOUT_MODES,
    CalibratedFrame,
    Flag,
    Geometry,
    Overscan,
    PendingCalibration,
    ReadoutMode,
    Saturation,
    Section,
    apply_header_updates,
    calibrate_frame,
    overscan_level,
    parse_section,
    prepare_calibration,
    readout_mode,
    saturation_level,
    trim_updates,
)
from ingest.reduce.combine import (
    BadPixels,
    Combined,
    MasterFlat,
    RejectedFrame,
    bad_pixel_mask,
    flat_saturation,
    make_master_bias,
    make_master_flat,
    sigma_clip_combine,
)
from ingest.reduce.cosmics import CosmicRays, detect_cosmics
from ingest.reduce.fitsio import product_hdul, read_product, write_product
from ingest.reduce.imaging import ImageQuality, Star, image_quality, pixel_scale_arcsec

__all__ = [
    "ADC_MAX",
    "DEFECT_FLAGS",
    "READOUT_MODES",
    "BadPixels",
    "CalibratedFrame",
    "Combined",
    "CosmicRays",
    "Flag",
    "Geometry",
    "ImageQuality",
    "MasterFlat",
    "Overscan",
    "PendingCalibration",
    "ReadoutMode",
    "RejectedFrame",
    "Saturation",
    "Section",
    "Star",
    "apply_header_updates",
    "bad_pixel_mask",
    "calibrate_frame",
    "detect_cosmics",
    "flat_saturation",
    "image_quality",
    "make_master_bias",
    "make_master_flat",
    "overscan_level",
    "parse_section",
    "pixel_scale_arcsec",
    "prepare_calibration",
    "product_hdul",
    "read_product",
    "readout_mode",
    "saturation_level",
    "sigma_clip_combine",
    "trim_updates",
    "write_product",
]
