"""The night simulator and its reference data: determinism, headers, and honest truth.

The simulator is the ground truth for every ingest and reduction test, so these tests
check the truth file against the pixels themselves rather than against the code's
intentions. Reference data comes from the real goodman-pipeline distribution (downloaded
once per cache); archive handling is also tested offline on hand-made archives.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import warnings
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from numpy.polynomial import Polynomial

from ingest import refdata
from ingest.simulate import KINDS, NightSummary, simulate_night

SEED = 11
SLIT_NAME = "1.0_LONG_SLIT"
SMALL = {"n_bias": 2, "n_flat": 1, "n_arc": 1, "n_science_spectra": 1, "n_science_images": 1}
REQUIRED = (
    "INSTRUME",
    "OBSERVAT",
    "TELESCOP",
    "OBSTYPE",
    "OBJECT",
    "WAVMODE",
    "INSTCONF",
    "GRATING",
    "SLIT",
    "FILTER",
    "FILTER2",
    "CAM_TARG",
    "GRT_TARG",
    "ROI",
    "CCDSUM",
    "GAIN",
    "RDNOISE",
    "DATE-OBS",
    "DATE",
    "EXPTIME",
    "OBSRA",
    "OBSDEC",
    "RA",
    "DEC",
    "AIRMASS",
    "PROPID",
    "OBSERVER",
    "LAMP_HGA",
    "LAMP_NE",
    "LAMP_AR",
    "LAMP_FE",
    "LAMP_CU",
    "LAMP_QUA",
    "LAMP_BUL",
    "LAMP_DOM",
    "DATASEC",
    "TRIMSEC",
    "BIASSEC",
    "SIMULATE",
    "SIMSEED",
)


@pytest.fixture(scope="session")
def ref_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service home of the test session (conftest), so the download is shared."""
    env = os.environ.get("VO_SERVICE_HOME")
    return Path(env) if env else tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def night2(tmp_path_factory: pytest.TempPathFactory, ref_home: Path) -> NightSummary:
    return simulate_night(
        tmp_path_factory.mktemp("night2"),
        seed=SEED,
        binning=2,
        home=ref_home,
        n_bias=3,
        n_flat=2,
        n_arc=2,
        n_science_spectra=3,
        n_science_images=3,
        n_sky_flats=2,
    )


@pytest.fixture(scope="module")
def truth2(night2: NightSummary) -> dict[str, Any]:
    return json.loads(night2.truth_path.read_text())


def _frames(truth: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in truth["frames"] if f["kind"] == kind]


def _section(text: str) -> tuple[slice, slice]:
    x1, x2, y1, y2 = map(int, re.fullmatch(r"\[(\d+):(\d+),(\d+):(\d+)\]", text).groups())
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def _load(outdir: Path, name: str) -> tuple[fits.Header, np.ndarray]:
    with fits.open(outdir / name) as hdul:
        return hdul[0].header, hdul[0].data.astype(np.float64)


# ----------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames(tmp_path: Path, ref_home: Path) -> None:
    a = simulate_night(tmp_path / "a", seed=5, home=ref_home, **SMALL)
    b = simulate_night(tmp_path / "b", seed=5, home=ref_home, **SMALL)
    c = simulate_night(tmp_path / "c", seed=6, home=ref_home, **SMALL)
    assert [p.name for p in a.files] == [p.name for p in b.files]
    for pa, pb in zip(a.files, b.files, strict=True):
        with fits.open(pa) as ha, fits.open(pb) as hb:
            assert ha[0].data.tobytes() == hb[0].data.tobytes()
            assert ha[0].header.tostring() == hb[0].header.tostring()
        assert pa.read_bytes() == pb.read_bytes()
    assert a.truth_path.read_bytes() == b.truth_path.read_bytes()
    with fits.open(a.files[-1]) as ha, fits.open(c.files[-1]) as hc:
        assert ha[0].data.tobytes() != hc[0].data.tobytes()


# ---------------------------------------------------------------------- headers


def test_headers_follow_goodman_conventions(night2: NightSummary) -> None:
    expected = {
        "bias": ("BIAS", "BIAS"),
        "flat": ("FLAT", None),
        "arc": ("COMP", "HgArNe"),
        "science_spectrum": ("OBJECT", None),
        "science_image": ("OBJECT", None),
    }
    starts = []
    for path in night2.files:
        h = fits.getheader(path)
        kind = re.match(r"\d{4}_(bias|flat|arc|science_spectrum|science_image)_", path.name)
        assert kind, path.name
        kind = kind.group(1)
        missing = [k for k in REQUIRED if k not in h]
        assert not missing, (path.name, missing)
        assert h["BITPIX"] == 16 and h["BZERO"] == 32768
        assert h["INSTRUME"] == "Goodman Spectrograph" and h["OBSERVAT"] == "SOAR"
        assert h["TELESCOP"] == "SOAR 4.1m" and h["INSTCONF"] == "Red"
        assert h["SIMULATE"] is True and h["SIMSEED"] == SEED
        assert h["CCDSUM"] == "2 2" and h["GAIN"] == 1.48 and h["RDNOISE"] == 3.89
        obstype, obj = expected[kind]
        assert h["OBSTYPE"] == obstype
        if obj:
            assert h["OBJECT"] == obj
        for key in ("LAMP_HGA", "LAMP_NE", "LAMP_AR", "LAMP_FE", "LAMP_CU", "LAMP_QUA"):
            assert h[key] in ("TRUE", "FALSE")
        if kind == "arc":
            assert h["LAMP_HGA"] == h["LAMP_NE"] == "TRUE"
        if h["OBJECT"] == "QuartzFlat":
            assert h["LAMP_QUA"] == "TRUE"
        spec = h["WAVMODE"] != "IMAGING"
        if kind == "science_image" or h["OBJECT"] == "SkyFlat":
            assert not spec
        if spec:
            assert (h["WAVMODE"], h["GRATING"], h["SLIT"]) == ("400_M1", "SYZY_400", SLIT_NAME)
            assert (h["CAM_TARG"], h["GRT_TARG"], h["FILTER2"]) == (11.6, 5.8, "<NO FILTER>")
            assert h["ROI"] == "Spectroscopic 2x2"
            assert (h["NAXIS1"], h["NAXIS2"]) == (2071, 948)
        else:
            assert (h["GRATING"], h["SLIT"], h["ROI"]) == (
                "<NO GRATING>",
                "<NO MASK>",
                "Imaging 2x2",
            )
            assert h["CAM_TARG"] == 0 and h["FILTER"] in ("g-SDSS", "r-SDSS", "i-SDSS")
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", h["OBSRA"])
        assert re.fullmatch(r"-?\d\d:\d\d:\d\d\.\d{3}", h["OBSDEC"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", h["DATE-OBS"])
        assert re.fullmatch(r"SOAR2024A-\d{3}", h["PROPID"])
        assert h["AIRMASS"] >= 1.0
        start = datetime.fromisoformat(h["DATE-OBS"])
        assert datetime.fromisoformat(h["DATE"]) >= start + timedelta(seconds=h["EXPTIME"])
        assert (start - timedelta(hours=12)).date().isoformat() == "2024-03-15"
        if kind in ("science_spectrum", "science_image"):
            assert start >= datetime(2024, 3, 15, 23, 30)
        if kind == "bias" or h["OBJECT"] == "QuartzFlat":
            assert start < datetime(2024, 3, 15, 21, 0)
        starts.append(start)
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert len({fits.getheader(p)["PROPID"] for p in night2.files}) == 1


def test_counts_match_summary_files_and_truth(night2: NightSummary, truth2: dict) -> None:
    c = night2.counts
    assert set(c) == set(KINDS)
    assert c == {"bias": 3, "flat": 4, "arc": 2, "science_spectrum": 3, "science_image": 3}
    on_disk = sorted(night2.outdir.glob("*.fits"))
    assert on_disk == sorted(night2.files)
    names = [p.name for p in night2.files]
    assert [int(n[:4]) for n in names] == list(range(1, len(names) + 1))
    for kind in KINDS:
        assert sum(f"_{kind}_" in n for n in names) == c[kind]
    assert truth2["counts"] == c
    assert [f["file"] for f in truth2["frames"]] == names
    assert all(re.fullmatch(r"\d{4}_[a-z_]+_[A-Za-z0-9+_-]+\.fits", n) for n in names)


# -------------------------------------------------------------- detector truth


def test_sections_and_overscan_track_the_bias_level(night2: NightSummary, truth2: dict) -> None:
    levels = []
    for frame in truth2["frames"]:
        h, data = _load(night2.outdir, frame["file"])
        ys, xs = _section(h["BIASSEC"])
        dy, dx = _section(h["DATASEC"])
        ty, tx = _section(h["TRIMSEC"])
        assert xs.stop <= dx.start and tx == dx and ty.start == 1 and dy.stop == h["NAXIS2"]
        assert dx.stop <= h["NAXIS1"]
        assert abs(float(np.mean(data[ys, xs])) - frame["bias_level_adu"]) < 0.3
        levels.append(frame["bias_level_adu"])
    assert min(levels) > 780 and max(levels) < 830 and max(levels) - min(levels) > 0.05


def test_hot_pixels_and_bad_column_show_in_long_exposures(
    night2: NightSummary, truth2: dict
) -> None:
    frame = max(_frames(truth2, "science_spectrum"), key=lambda f: f["exptime"])
    _, data = _load(night2.outdir, frame["file"])
    defects = truth2["detector"]["readouts"]["Spectroscopic 2x2"]["defects"]
    hot = [(y, x, r) for y, x, r in defects["hot_pixels"] if r * frame["exptime"] > 2000]
    assert len(hot) > 10
    for y, x, _ in hot:
        local = np.median(data[max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4])
        assert data[y, x] - local > 500
    bad = defects["bad_column"]
    col = data[bad["y_from"] : bad["y_to"] + 1, bad["x"]]
    side = data[bad["y_from"] : bad["y_to"] + 1, bad["x"] + 3]
    assert np.median(col - side) == pytest.approx(bad["excess_electrons"] / 1.48, abs=15)


def test_cosmic_ray_pixels_are_elevated(night2: NightSummary, truth2: dict) -> None:
    for frame in truth2["frames"]:
        cr = frame["cosmic_rays"]
        if frame["exptime"] == 0:
            assert cr["n_events"] == 0
            continue
        if frame["kind"] in ("flat",):
            continue  # bright flats hide faint deposits in shot noise
        h, data = _load(night2.outdir, frame["file"])
        if frame["exptime"] >= 300:
            assert cr["n_events"] > 20
        assert cr["n_pixels"] == sum(len(e["pixels"]) for e in cr["events"])
        for event in cr["events"]:
            pix = np.array(event["pixels"])
            assert pix.shape[1] == 2
            assert (pix[:, 0] < h["NAXIS2"]).all() and (pix[:, 1] < h["NAXIS1"]).all()
            k = int(np.argmax(event["electrons"]))
            y, x = event["pixels"][k]
            local = np.median(data[max(y - 6, 0) : y + 7, max(x - 6, 0) : x + 7])
            assert data[y, x] - local > 0.5 * event["electrons"][k] / 1.48 - 20


# --------------------------------------------------------------- spectroscopy


def test_arc_lines_fall_where_the_wavelength_solution_says(
    night2: NightSummary, truth2: dict
) -> None:
    spec = truth2["spectroscopy"]
    sol = spec["wavelength_solution"]
    poly = Polynomial(sol["coefficients"])
    assert sol["degree"] == 3
    lo, hi = sol["wavelength_range_A"]
    assert 2950 < lo < 3150 and 6950 < hi < 7150
    readout = truth2["detector"]["readouts"]["Spectroscopic 2x2"]
    x0, x1 = readout["light_columns"]
    lines = spec["arc_lines"]
    assert len(lines) > 40
    assert {"Hg I", "Ne I", "Ar I"} <= {line["species"] for line in lines}
    xs = np.array([line["x"] for line in lines])
    assert np.allclose(poly(xs), [line["wavelength_A"] for line in lines], atol=1e-6)
    assert ((xs >= x0) & (xs <= x1)).all()
    arc = _frames(truth2, "arc")[0]
    _, data = _load(night2.outdir, arc["file"])
    lower = Polynomial(spec["slit_illumination"]["lower_edge_coefficients"])
    upper = Polynomial(spec["slit_illumination"]["upper_edge_coefficients"])
    mid = int(0.5 * (lower(1000) + upper(1000)))
    profile = data[mid - 20 : mid + 20].mean(axis=0) - arc["bias_level_adu"]
    isolated = [
        line
        for line in lines
        if line["relative_strength"] > 0.05
        and not any(0 < abs(o["x"] - line["x"]) < 8 for o in lines)
    ]
    assert len(isolated) > 10
    for line in isolated:
        i = round(line["x"])
        seg = profile[i - 4 : i + 5]
        centroid = float((seg * np.arange(i - 4, i + 5)).sum() / seg.sum())
        assert centroid == pytest.approx(line["x"], abs=0.05)
    # the slit does not fill the detector: rows outside the edges stay dark
    strongest = round(max(lines, key=lambda line: line["relative_strength"])["x"])
    assert data[: int(lower(strongest)) - 5, strongest].max() < arc["bias_level_adu"] + 200
    assert data[int(upper(strongest)) + 5 :, strongest].max() < arc["bias_level_adu"] + 200
    assert spec["reference_data"]["lamp_spectrum"] == "goodman_comp_400M1_HgArNe.fits"


def test_science_spectrum_trace_and_lines(night2: NightSummary, truth2: dict) -> None:
    frame = _frames(truth2, "science_spectrum")[0]
    _, data = _load(night2.outdir, frame["file"])
    data -= frame["bias_level_adu"]
    trace = frame["trace"]
    centre = Polynomial(trace["coefficients"])
    for x, y in trace["samples"]:
        assert centre(x) == pytest.approx(y, abs=1e-6)
    ys = np.array([y for _, y in trace["samples"]])
    assert np.ptp(ys) > 0.5  # tilted and curved
    errors = []
    for x in range(200, 1900, 150):
        col = np.median(data[:, x - 3 : x + 4], axis=1)
        yc = float(centre(x))
        i = round(yc)
        seg = col[i - 8 : i + 9] - np.median(col[i + 20 : i + 40])
        errors.append((seg * np.arange(i - 8, i + 9)).sum() / seg.sum() - yc)
    assert abs(float(np.mean(errors))) < 0.15
    names = {line["name"] for line in frame["emission_lines"]}
    assert {"Halpha", "Hbeta", "[OIII]5007", "[NII]6583"} <= names
    poly = Polynomial(truth2["spectroscopy"]["wavelength_solution"]["coefficients"])
    for line in frame["emission_lines"]:
        assert poly(line["x"]) == pytest.approx(line["observed_wavelength_A"], abs=1e-6)
        assert line["observed_wavelength_A"] == pytest.approx(
            line["rest_wavelength_A"] * (1 + frame["redshift"])
        )
        assert line["y"] == pytest.approx(float(centre(line["x"])))
        i, j = round(line["x"]), round(line["y"])
        on = data[j - 2 : j + 3, i - 1 : i + 2].mean()
        off = data[j - 2 : j + 3, i - 25 : i - 15].mean()
        assert on > off
    sky = {round(line["wavelength_A"]) for line in frame["sky_lines"]}
    assert {5577, 6300} <= sky


# -------------------------------------------------------------------- imaging


def test_image_wcs_places_the_true_stars(night2: NightSummary, truth2: dict) -> None:
    frame = _frames(truth2, "science_image")[0]
    h, data = _load(night2.outdir, frame["file"])
    data -= frame["bias_level_adu"]
    for key in ("CRPIX1", "CRVAL1", "CD1_1", "CD2_2", "CD1_2", "CD2_1"):
        assert key in h
    assert h["CTYPE1"] == "RA---TAN" and h["CTYPE2"] == "DEC--TAN"
    assert abs(abs(h["CD1_1"]) * 3600 - 0.3) < 0.001
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # DATE-OBS -> MJD-OBS note
        wcs = WCS(h)
    stars = frame["stars"]
    assert len(stars) > 50
    ra = np.array([s["ra"] for s in stars])
    dec = np.array([s["dec"] for s in stars])
    px, py = wcs.all_world2pix(ra, dec, 0)
    assert np.allclose(px, [s["x"] for s in stars], atol=1e-3)
    assert np.allclose(py, [s["y"] for s in stars], atol=1e-3)
    bright = [s for s in stars if 16.5 < s["mag"] < 19.5 and s["illumination"] > 0.9]
    assert bright
    for s in bright:
        i, j = round(s["x"]), round(s["y"])
        cut = data[j - 5 : j + 6, i - 5 : i + 6]
        cut = cut - np.median(data[j - 25 : j + 26, i - 25 : i + 26])
        yy, xx = np.mgrid[j - 5 : j + 6, i - 5 : i + 6]
        assert (cut * xx).sum() / cut.sum() == pytest.approx(s["x"], abs=0.3)
        assert (cut * yy).sum() / cut.sum() == pytest.approx(s["y"], abs=0.3)
    target = next(t for t in truth2["targets"] if t["name"] == frame["object"])
    assert len(target["stars"]) >= len(stars)


# ------------------------------------------------------------------- binning 1


def test_unbinned_night(tmp_path: Path, ref_home: Path) -> None:
    s = simulate_night(
        tmp_path,
        seed=3,
        binning=1,
        home=ref_home,
        n_bias=1,
        n_flat=0,
        n_arc=1,
        n_science_spectra=1,
        n_science_images=1,
    )
    truth = json.loads(s.truth_path.read_text())
    assert truth["binning"] == 1
    for frame in truth["frames"]:
        h = fits.getheader(s.outdir / frame["file"])
        assert h["CCDSUM"] == "1 1"
        if frame["mode"] == "spectroscopy":
            assert (h["NAXIS1"], h["NAXIS2"]) == (4142, 1896)
            assert h["ROI"] == "Spectroscopic 1x1"
            assert (h["DATASEC"], h["TRIMSEC"]) == ("[51:4110,1:1896]", "[51:4110,2:1896]")
        else:
            assert (h["NAXIS1"], h["NAXIS2"]) == (3100, 3100) and h["ROI"] == "Imaging 1x1"
            assert abs(abs(h["CD1_1"]) * 3600 - 0.15) < 1e-4
    sol = truth["spectroscopy"]["wavelength_solution"]
    assert 0.9 < sol["mean_dispersion_A_per_px"] < 1.1
    x0, x1 = truth["detector"]["readouts"]["Spectroscopic 1x1"]["light_columns"]
    xs = np.array([line["x"] for line in truth["spectroscopy"]["arc_lines"]])
    assert ((xs >= x0) & (xs <= x1)).all()
    arc = _frames(truth, "arc")[0]
    _, data = _load(s.outdir, arc["file"])
    strongest = max(truth["spectroscopy"]["arc_lines"], key=lambda line: line["relative_strength"])
    i = round(strongest["x"])
    assert data[900, i] > data[900, i + 15] + 1000


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        simulate_night(tmp_path, binning=3)
    with pytest.raises(ValueError):
        simulate_night(tmp_path, n_bias=-1)


# ----------------------------------------------------------- reference data


def test_reference_library_and_line_lists(ref_home: Path) -> None:
    ref_dir = refdata.ensure_reference_data(ref_home)
    assert ref_dir == ref_home / "cache" / "goodman-pipeline-3.1.0" / "data"
    assert (ref_dir.parent / "LICENSE").read_text().startswith("BSD 3-Clause")
    assert not (ref_dir / "dcr_source").exists() and not (ref_dir / "test_data").exists()
    ref = refdata.load_reference_spectrum(
        refdata.find_reference_spectrum(ref_dir, "400_M1", "HgArNe")
    )
    assert ref.function == "Chebyshev1D" and ref.npix == 4060
    assert ref.lamps_on == ("LAMP_HGA", "LAMP_NE")
    pix = np.array([p for p, _ in ref.identified])
    wav = np.array([w for _, w in ref.identified])
    assert len(pix) > 15 and np.abs(ref.wavelength(pix) - wav).max() < 0.5
    lines = refdata.load_lamp_lines(ref_dir, ["HgArNe"], (3000.0, 7100.0))
    assert lines == sorted(lines) and all(3000 <= w <= 7100 and i > 0 for w, i in lines)
    assert any(abs(w - 5460.735) < 1e-3 for w, _ in lines)
    he = refdata.load_nist_lines(ref_dir, "He")
    assert any(line.flags.startswith("*") for line in he)  # '15*   Pc' parses


def _fake_members(prefix: str) -> dict[str, bytes]:
    data = f"{prefix}goodman_pipeline/data/"
    return {
        f"{data}ref_comp/goodman_comp_400M1_HgArNe.fits": b"fits",
        f"{data}nist_list/nist_air_strong_lines_Ne.txt": b" 100 , 6402.248 , Ne I , X\n",
        f"{data}dcr_source/dcr.c": b"int main;",
        f"{data}test_data/big.fits": b"x",
        f"{prefix}goodman_pipeline/core/core.py": b"code",
        "../evil.txt": b"no",
    }


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_unpack_keeps_only_reference_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    def fake_download(dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        if kind == "wheel":
            path = dest / "goodman_pipeline-3.1.0-py3-none-any.whl"
            with zipfile.ZipFile(path, "w") as zf:
                for name, payload in _fake_members("").items():
                    zf.writestr(name, payload)
                zf.writestr("goodman_pipeline-3.1.0.dist-info/licenses/LICENSE", b"BSD")
        else:
            path = dest / "goodman_pipeline-3.1.0.tar.gz"
            with tarfile.open(path, "w:gz") as tf:
                members = _fake_members("goodman_pipeline-3.1.0/")
                members["goodman_pipeline-3.1.0/LICENSE"] = b"BSD"
                for name, payload in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
        return path

    monkeypatch.setattr(refdata, "_download", fake_download)
    out = refdata.ensure_reference_data(tmp_path)
    files = sorted(
        p.relative_to(out.parent).as_posix() for p in out.parent.rglob("*") if p.is_file()
    )
    assert files == [
        "LICENSE",
        "data/nist_list/nist_air_strong_lines_Ne.txt",
        "data/ref_comp/goodman_comp_400M1_HgArNe.fits",
    ]
    assert refdata.load_lamp_lines(out, ["Ne"]) == [(6402.248, 100.0)]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["goodman-pipeline-3.1.0"]
    monkeypatch.setattr(refdata, "_download", lambda dest: pytest.fail("downloaded twice"))
    assert refdata.ensure_reference_data(tmp_path) == out


def test_failed_download_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "download"] and "goodman-pipeline==3.1.0" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(refdata.subprocess, "run", failing_run)
    with pytest.raises(refdata.ReferenceDataError, match="could not download goodman-pipeline"):
        refdata.ensure_reference_data(tmp_path)
    assert not (tmp_path / "cache" / "goodman-pipeline-3.1.0").exists()
    assert list((tmp_path / "cache").iterdir()) == []
