"""What the reduction benchmarks share: the simulated night, truth scorers, goodman-pipeline.

Imported by ``bench_reduce.py`` and ``bench_night.py`` (run as scripts from any folder;
their own folder is on ``sys.path``). Nothing here is a test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ingest.reduce import parse_section  # noqa: E402
from ingest.simulate import simulate_night  # noqa: E402
from ingest.simulate_detector import make_detector, make_readout  # noqa: E402
from ingest.simulate_truth import near_trace, score_cosmic_rays  # noqa: E402

GSP_VENV = Path("/tmp/gsp-venv")
GSP_VERSION = "3.1.0"
READ_NOISE_E = 3.89  # the simulated camera's, as in the frames' RDNOISE


NIGHT = {"n_bias": 10, "n_flat": 10, "n_arc": 2, "n_science_spectra": 4, "n_science_images": 0}
IMAGES = {"n_bias": 0, "n_flat": 0, "n_arc": 0, "n_science_spectra": 0, "n_science_images": 6}


def night_dir(workdir: Path, seed: int, binning: int, *, images: bool = False) -> Path:
    """The simulated night (10 biases, 10 flats, 2 arcs, 4 spectra; or, with ``images``,
    6 science images alone), made once and reused."""
    prefix = "images" if images else "night"
    out = workdir / f"{prefix}-{binning}x{binning}-seed{seed}"
    if not (out / "truth.json").exists():
        home = ROOT / "var" if (ROOT / "var" / "cache").exists() else workdir / "home"
        t0 = time.perf_counter()
        simulate_night(out, seed=seed, binning=binning, home=home, **(IMAGES if images else NIGHT))
        print(f"simulated {out} in {time.perf_counter() - t0:.1f} s")
    return out


def night(
    workdir: Path, seed: int, binning: int, *, images: bool = False
) -> tuple[dict[str, Any], list[Any]]:
    """Truth and every raw frame as ``(truth frame entry, data, header)``."""
    out = night_dir(workdir, seed, binning, images=images)
    truth = json.loads((out / "truth.json").read_text())
    frames = []
    for f in truth["frames"]:
        with fits.open(out / f["file"]) as hdul:
            frames.append((f, hdul[0].data.copy(), hdul[0].header.copy()))
    return truth, frames


def trim_origin(header: Any) -> tuple[int, int]:
    """Raw (y, x) of pixel [0, 0] of a frame trimmed to its TRIMSEC."""
    sec = parse_section(header["TRIMSEC"])
    return sec.y0, sec.x0


def cosmic_quality(
    found: np.ndarray,
    f: dict[str, Any],
    origin: tuple[int, int],
    known: np.ndarray,
    signal: np.ndarray,
) -> dict[str, int]:
    """Score a cosmic-ray mask against the truth of frame ``f``.

    ``found`` covers raw pixels from ``origin`` (y, x) on; ``signal`` is the cleaned frame in
    electrons (for the significance of each deposit); ``known`` marks detector defects,
    which count neither way. An event counts when one of its pixels got more than 5 sigma
    of charge; it is missed when such a pixel is not flagged. False pixels are flagged
    pixels no event touched; those within 3 FWHM of the trace centre are also counted apart.
    """
    score = score_cosmic_rays(f, found, origin, known, signal, READ_NOISE_E)
    return {
        "events": score.events,
        "missed": score.missed,
        "false": int(score.false.sum()),
        "false_trace": int((score.false & near_trace(f, origin, found.shape)).sum()),
    }


def truth_bias_pattern(truth: dict[str, Any], roi: str) -> np.ndarray | None:
    """The fixed bias pattern (ADU, raw frame) the simulator added, or None.

    truth.json keeps only its rms, so the pattern is rebuilt the way ``simulate_night``
    draws the camera from the seed; the rms check catches any change there.
    """
    camera_rng = np.random.default_rng(truth["seed"]).spawn(4)[0]
    key = int(camera_rng.integers(2**63))
    kind = roi.split()[0]
    detector = make_detector(make_readout(kind, truth["binning"]), np.random.default_rng(key))
    pattern = detector.bias_pattern
    a = detector.readout.active_x0
    expected = truth["detector"]["readouts"][roi]["defects"]["bias_pattern_rms_adu"]
    if abs(float(pattern[:, a:].std()) - expected) > 1e-3:
        return None
    return pattern


def ensure_gsp_venv() -> Path | None:
    """``/tmp/gsp-venv`` with goodman-pipeline 3.1.0, created on first use; None if it fails."""
    python = GSP_VENV / "bin" / "python"
    if python.exists():
        return GSP_VENV
    print(f"creating {GSP_VENV} with goodman-pipeline=={GSP_VERSION} (once) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(GSP_VENV)], check=True)
        subprocess.run(
            [str(GSP_VENV / "bin" / "pip"), "install", "-q", f"goodman-pipeline=={GSP_VERSION}"],
            check=True,
            timeout=1200,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"  cannot create it ({exc})")
        return None
    return GSP_VENV


def ensure_dcr(venv: Path) -> Path | None:
    """The ``dcr`` cosmic-ray program goodman-pipeline calls for 1x1 spectra.

    The package ships its C source but no binary; it is compiled once into the venv's
    ``bin``. None when there is no C compiler.
    """
    dcr = venv / "bin" / "dcr"
    if dcr.exists():
        return dcr
    proc = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import goodman_pipeline, os; print(os.path.dirname(goodman_pipeline.__file__))",
        ],
        capture_output=True,
        text=True,
    )
    source = Path(proc.stdout.strip()) / "data" / "dcr_source" / "dcr"
    if proc.returncode != 0 or not source.is_dir() or shutil.which("make") is None:
        return None
    print(f"compiling dcr from goodman-pipeline's source into {dcr} (once) ...")
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp) / "dcr"
        shutil.copytree(source, build)
        made = subprocess.run(["make"], cwd=build, capture_output=True, text=True)
        if made.returncode != 0 or not (build / "dcr").exists():
            print(f"  cannot build dcr: {made.stderr.strip()[-300:]}")
            return None
        shutil.copy2(build / "dcr", dcr)
    return dcr
