"""Per-proposal reduction settings and their defaults.

Stored per proposal as the overrides only (``auth.proposals.reduction_settings``), so a
change of a default reaches every proposal that did not choose otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

FLAT_NORMALISATIONS = ("mean", "simple", "none")
COSMIC_RAY_METHODS = ("default", "none")
EXTRACTIONS = ("optimal", "fractional")


@dataclass(frozen=True)
class ReductionSettings:
    min_biases: int = 3
    min_flats: int = 3
    ignore_bias: bool = False
    ignore_flats: bool = False
    flat_normalisation: str = "simple"
    cosmic_ray_method: str = "default"
    extraction_type: str = "optimal"
    extraction_width: float = 2.0
    saturation_threshold: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_CHOICES = {
    "flat_normalisation": FLAT_NORMALISATIONS,
    "cosmic_ray_method": COSMIC_RAY_METHODS,
    "extraction_type": EXTRACTIONS,
}
_RANGES = {
    "min_biases": (1, 100),
    "min_flats": (1, 100),
    "extraction_width": (0.5, 10.0),
    "saturation_threshold": (0.0, 100.0),
}


def settings_from(overrides: dict[str, Any]) -> ReductionSettings:
    """Defaults updated by ``overrides``; ValueError names the first bad entry."""
    known = {f.name: f for f in fields(ReductionSettings)}
    values: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in known:
            raise ValueError(f"unknown reduction setting {name!r}")
        kind = type(getattr(ReductionSettings(), name))
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{name} must be a number")
        if kind is int and value != int(value):
            raise ValueError(f"{name} must be a whole number")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(_CHOICES[name])}")
        if name in _RANGES and not _RANGES[name][0] <= value <= _RANGES[name][1]:
            low, high = _RANGES[name]
            raise ValueError(f"{name} must be between {low} and {high}")
        values[name] = kind(value)
    return ReductionSettings(**values)
