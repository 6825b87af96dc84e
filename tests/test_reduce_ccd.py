"""2-D calibration measured against the simulator's truth, not eyeballed.

Most checks use a small 2x2 night; 1x1 science frames check cosmic rays at full
resolution. Quality limits are what the reduction engine promises downstream: residual
bias structure <= 0.3 ADU, and in science spectra, 1x1 or 2x2, >= 99 % of cosmic-ray
events removed with <= 1 false pixel per frame and none on the spectral trace, checked
on several simulator seeds (at 2x2 over a night's frames: one frame may fall to 98.5 %).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from ingest.reduce import (
    CalibratedFrame,
    Flag,
    bad_pixel_mask,
    calibrate_frame,
    detect_cosmics,
    make_master_bias,
    make_master_flat,
    overscan_level,
    parse_section,
    prepare_calibration,
    product_hdul,
    read_product,
    readout_mode,
    saturation_level,
    sigma_clip_combine,
    write_product,
)
from ingest.reduce.ccd import Section, trim_updates
from ingest.simulate import simulate_night
from ingest.simulate_detector import make_detector, make_readout
from ingest.simulate_truth import known_defects as truth_defects
from ingest.simulate_truth import near_trace, score_cosmic_rays

SEED = 21


@pytest.fixture(scope="module")
def ref_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test session's service home (conftest), so the lamp download is shared."""
    env = os.environ.get("VO_SERVICE_HOME")
    return Path(env) if env else tmp_path_factory.mktemp("home")


class Night:
    def __init__(self, outdir: Path) -> None:
        self.dir = outdir
        self.truth = json.loads((outdir / "truth.json").read_text())
        self.frames: list[tuple[dict[str, Any], np.ndarray, fits.Header]] = []
        for f in self.truth["frames"]:
            with fits.open(outdir / f["file"]) as hdul:
                self.frames.append((f, hdul[0].data.copy(), hdul[0].header.copy()))

    def kind(self, kind: str) -> list[tuple[dict[str, Any], np.ndarray, fits.Header]]:
        return [x for x in self.frames if x[0]["kind"] == kind]


@pytest.fixture(scope="module")
def night2(tmp_path_factory: pytest.TempPathFactory, ref_home: Path) -> Night:
    out = tmp_path_factory.mktemp("night2")
    simulate_night(
        out, seed=SEED, binning=2, home=ref_home, n_bias=6, n_flat=5, n_arc=1,
        n_science_spectra=2, n_science_images=0,
    )  # fmt: skip
    return Night(out)


@pytest.fixture(scope="module")
def masters2(night2: Night) -> dict[str, Any]:
    biases = [calibrate_frame(r, h) for _, r, h in night2.kind("bias")]
    master_bias = make_master_bias(biases[:5])  # the sixth is held out
    flats = [calibrate_frame(r, h, master_bias=master_bias) for _, r, h in night2.kind("flat")]
    master_flat = make_master_flat(flats)
    bpm = bad_pixel_mask(master_bias, master_flat.flat)
    return {
        "biases": biases,
        "bias": master_bias,
        "flats": flats,
        "flat": master_flat,
        "bpm": bpm,
    }


def true_bias_pattern(seed: int, binning: int) -> np.ndarray:
    """The simulator's fixed bias pattern (ADU), rebuilt from its seed the way it does."""
    camera_rng = np.random.default_rng(seed).spawn(4)[0]
    key = int(camera_rng.integers(2**63))
    readout = make_readout("Spectroscopic", binning)
    return make_detector(readout, np.random.default_rng(key)).bias_pattern


def block_mean(a: np.ndarray, b: int) -> np.ndarray:
    ny, nx = a.shape
    return a[: ny // b * b, : nx // b * b].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3))


# ------------------------------------------------------------------------- sections


def test_parse_section() -> None:
    s = parse_section("[51:4110,2:1896]")
    assert s == Section(50, 4110, 1, 1896)
    assert s.shape == (1895, 4060)
    assert s.to_iraf() == "[51:4110,2:1896]"
    assert parse_section("[10:1,*]", (5, 20)) == Section(0, 10, 0, 5)
    with pytest.raises(ValueError):
        parse_section("51:4110,2:1896")
    with pytest.raises(ValueError):
        parse_section("[0:10,1:5]")
    with pytest.raises(ValueError):
        parse_section("[1:30,1:5]", (5, 20))


def test_saturation_levels_follow_the_readout_mode() -> None:
    red_slow = {"INSTCONF": "Red", "GAIN": 1.48, "RDNOISE": 3.89}
    mode = readout_mode(red_slow)
    assert mode is not None and mode.read_rate_khz == 344 and mode.saturates_digitally
    sat = saturation_level(red_slow, 800.0)
    assert sat.raw_adu == 65535 and "converter" in sat.reason
    red_fast = {"INSTCONF": "Red", "GAIN": 3.87, "RDNOISE": 7.05}
    sat = saturation_level(red_fast, 800.0)
    assert sat.raw_adu == pytest.approx(800.0 + 26486)
    unknown = saturation_level({"INSTCONF": "Red", "GAIN": 9.9, "RDNOISE": 1.0}, 800.0)
    assert unknown.raw_adu == 65535 and "unknown" in unknown.reason


# --------------------------------------------------------------------------- overscan


def test_overscan_fit_beats_row_median_against_truth(night2: Night) -> None:
    errors: dict[str, list[float]] = {"fit": [], "row": []}
    row_rms: dict[str, list[float]] = {"fit": [], "row": []}
    for f, raw, header in night2.frames:
        sec = parse_section(header["BIASSEC"], raw.shape)
        for method in errors:
            ov = overscan_level(raw, sec, method=method)
            errors[method].append(ov.mean - f["bias_level_adu"])
            row_rms[method].append(float(np.sqrt(np.mean((ov.level - f["bias_level_adu"]) ** 2))))
    assert max(abs(e) for e in errors["fit"]) < 0.06
    # per-row medians carry ~0.7 ADU of read noise into every row (stripes)
    assert np.mean(row_rms["row"]) > 0.4
    assert np.mean(row_rms["fit"]) < 0.06


def test_trim_geometry_and_wcs_shift() -> None:
    header = {"CRPIX1": 1575.5, "CRPIX2": 1550.5, "TRIMSEC": "[51:3100,2:3100]"}
    sec = parse_section(header["TRIMSEC"])
    cards = trim_updates(header, sec)
    assert cards["CRPIX1"][0] == pytest.approx(1525.5)
    assert cards["CRPIX2"][0] == pytest.approx(1549.5)
    assert cards["LTV1"][0] == -50 and cards["LTV2"][0] == -1
    assert cards["BIASSEC"] is None and cards["DATASEC"][0] == "[1:3050,1:3099]"


# ------------------------------------------------------------------------------ bias


def test_bias_residual_below_0p3_adu(night2: Night, masters2: dict[str, Any]) -> None:
    """Overscan + master bias leave no structure above 0.3 ADU (2x2)."""
    gain = night2.truth["detector"]["gain_e_per_adu"]
    rn_adu = night2.truth["detector"]["rdnoise_e"] / gain
    _, raw, header = night2.kind("bias")[5]
    held_out = calibrate_frame(raw, header, master_bias=masters2["bias"])
    good = masters2["bpm"].mask == 0
    resid = np.where(good, held_out.data / gain, 0.0)
    n_master = 5
    noise = rn_adu * np.sqrt(1 + 1 / n_master)
    # structure: 16x16 block means, noise removed in quadrature
    blocks = block_mean(resid, 16)
    excess = np.sqrt(max(blocks.var() - noise**2 / 256, 0.0))
    assert abs(float(resid[good].mean())) < 0.05
    assert excess < 0.3, excess
    # the master itself against the simulator's true pattern (pixel by pixel)
    sec = parse_section(header["TRIMSEC"])
    pattern = true_bias_pattern(SEED, 2)[sec.slices]
    diff = masters2["bias"].data / gain - pattern
    pix_excess = np.sqrt(max(diff[good].var() - rn_adu**2 / n_master - 1 / 12 / n_master, 0))
    assert pix_excess < 0.3, pix_excess
    assert float(np.sqrt(block_mean(np.where(good, diff, 0), 16).var())) < 0.3
    # without a master bias the pattern is all there: the comparison is meaningful
    no_master = calibrate_frame(raw, header).data / gain
    assert float(np.sqrt(block_mean(no_master, 16).var())) > 0.5


def test_noise_model_matches_the_data(night2: Night, masters2: dict[str, Any]) -> None:
    _, raw, header = night2.kind("bias")[5]
    c = calibrate_frame(raw, header, master_bias=masters2["bias"])
    good = masters2["bpm"].mask == 0
    pull = c.data[good] / np.sqrt(c.variance[good])
    assert 0.95 < float(np.std(pull)) < 1.06
    assert c.header_updates["BUNIT"][0] == "electron"


def test_bad_pixel_mask_against_truth(night2: Night, masters2: dict[str, Any]) -> None:
    bpm = masters2["bpm"].mask
    _, _, header = night2.kind("bias")[0]
    sec = parse_section(header["TRIMSEC"])
    defects = night2.truth["detector"]["readouts"][header["ROI"]]["defects"]
    hot = np.zeros(bpm.shape, bool)
    rate = np.zeros(bpm.shape)
    for y, x, r in defects["hot_pixels"]:
        if sec.y0 <= y < sec.y1 and sec.x0 <= x < sec.x1:
            hot[y - sec.y0, x - sec.x0] = True
            rate[y - sec.y0, x - sec.x0] = r
    col = np.zeros(bpm.shape, bool)
    bc = defects["bad_column"]
    col[max(bc["y_from"] - sec.y0, 0) :, bc["x"] - sec.x0] = True
    flagged = (bpm & (Flag.HOT | Flag.BAD_COLUMN)) != 0
    assert np.count_nonzero(flagged & ~hot & ~col) == 0  # no false defects
    assert np.all(flagged[col]) and np.all((bpm[col] & Flag.BAD_COLUMN) != 0)
    # every hot pixel above 10 e-/s (20 e- in a bias: ~10 sigma of a 5-bias master)
    assert np.all(flagged[hot & (rate > 10.0)])
    assert np.count_nonzero(flagged & hot) > 0.3 * np.count_nonzero(hot)
    assert masters2["bpm"].counts["low_response"] == 0  # the simulated CCD has none


def test_dead_pixels_found_in_flat(masters2: dict[str, Any]) -> None:
    flat = masters2["flat"].flat
    data = flat.data.copy()
    lit = np.argwhere((flat.mask & Flag.UNILLUMINATED) == 0)
    picks = lit[len(lit) // 3 :: len(lit) // 7][:5]
    data[picks[:, 0], picks[:, 1]] *= 0.3
    damaged = CalibratedFrame(data, flat.variance, flat.mask, {})
    bpm = bad_pixel_mask(None, damaged)
    assert bpm.counts["low_response"] == 5
    assert np.all((bpm.mask[picks[:, 0], picks[:, 1]] & Flag.LOW_RESPONSE) != 0)


# ------------------------------------------------------------------------------ flat


def test_master_flat_leaves_pixel_response_and_slit(
    night2: Night, masters2: dict[str, Any]
) -> None:
    master = masters2["flat"]
    assert master.rejected == [] and master.used == list(range(5))
    flat = master.flat
    lit = (flat.mask & Flag.UNILLUMINATED) == 0
    assert abs(float(flat.data[lit].mean()) - 1.0) < 0.01
    # the lamp spectrum is gone: the column profile inside the slit is flat
    rows = slice(*master.meta["lit_rows"])
    profile = np.median(flat.data[rows], axis=0)
    lit_cols = profile > 0.5
    assert float(np.std(profile[lit_cols][50:-50])) < 0.01
    # an arc line becomes flat along the slit (vignetting and dust divided out)
    _, raw, header = night2.kind("arc")[0]
    before = calibrate_frame(raw, header, master_bias=masters2["bias"])
    after = calibrate_frame(raw, header, master_bias=masters2["bias"], master_flat=flat)
    col = int(np.argmax(np.median(after.data[rows], axis=0)))
    r0, r1 = master.meta["lit_rows"]
    band_after = after.data[r0 + 10 : r1 - 10, col - 1 : col + 2].sum(axis=1)
    band_before = before.data[r0 + 10 : r1 - 10, col - 1 : col + 2].sum(axis=1)
    noise = np.sqrt(band_after.mean()) / band_after.mean()
    assert float(band_after.std() / band_after.mean()) < 2.0 * noise + 0.003
    assert float(band_before.std() / band_before.mean()) > 0.01


def test_flat_normalisations(masters2: dict[str, Any]) -> None:
    flats = masters2["flats"]
    mean = make_master_flat(flats, normalization="mean").flat
    lit = (mean.mask & Flag.UNILLUMINATED) == 0
    assert abs(float(mean.data[lit].mean()) - 1.0) < 0.01
    none = make_master_flat(flats, normalization="none").flat
    lit_none = (none.mask & Flag.UNILLUMINATED) == 0
    assert float(np.median(none.data[lit_none])) == pytest.approx(1.0, abs=0.5)
    with pytest.raises(ValueError):
        make_master_flat(flats, normalization="full")


def test_saturated_flat_rejected_with_reason(night2: Night, masters2: dict[str, Any]) -> None:
    _, raw, header = night2.kind("flat")[0]
    level = float(np.median(raw[raw > np.percentile(raw, 90)]))
    hot_raw = np.clip(raw.astype(np.float64) * (70000.0 / level), 0, 65535).astype(np.uint16)
    saturated = calibrate_frame(hot_raw, header, master_bias=masters2["bias"])
    assert saturated.header_updates["NSATURAT"][0] > 1000
    result = make_master_flat([*masters2["flats"][:2], saturated])
    assert [r.index for r in result.rejected] == [2]
    assert "saturated" in result.rejected[0].reason
    assert "65535" in result.rejected[0].reason
    assert result.used == [0, 1]


def test_masters_from_pending_calibrations_match_calibrated_frames(
    night2: Night, masters2: dict[str, Any]
) -> None:
    """Masters built block by block from the raw integers equal those built from whole
    calibrated frames, and a saturated flat is still rejected with its reason."""
    raws = night2.kind("bias")[:5]
    pending = [prepare_calibration(r, h) for _, r, h in raws]
    whole = masters2["bias"]
    master = make_master_bias(pending)
    assert np.array_equal(master.data, whole.data)
    assert np.array_equal(master.variance, whole.variance)
    assert np.array_equal(master.mask, whole.mask)
    block = pending[0].rows(slice(7, 30))
    full = masters2["biases"][0]
    assert all(np.array_equal(b, f[7:30]) for b, f in zip(block, full.rows(), strict=True))

    flats = night2.kind("flat")
    _, raw, header = flats[0]
    level = float(np.median(raw[raw > np.percentile(raw, 90)]))
    hot_raw = np.clip(raw.astype(np.float64) * (70000.0 / level), 0, 65535).astype(np.uint16)
    lazy = [prepare_calibration(r, h, master_bias=whole) for _, r, h in flats]
    made = make_master_flat([*lazy, prepare_calibration(hot_raw, header, master_bias=whole)])
    assert [r.index for r in made.rejected] == [len(flats)]
    assert "saturated" in made.rejected[0].reason and "65535" in made.rejected[0].reason
    reference = masters2["flat"].flat
    assert np.array_equal(made.flat.mask, reference.mask)
    lit = reference.mask == 0
    assert float(np.max(np.abs(made.flat.data[lit] - reference.data[lit]))) < 1e-3


def test_read_raw_matches_astropy_scaling(night2: Night, tmp_path: Path) -> None:
    """The sign-bit shortcut gives astropy's uint16 values; other encodings go through
    astropy's own scaling."""
    from ingest.reduce.steps import read_raw

    f, raw, _ = night2.frames[0]
    fast = read_raw(str(night2.dir / f["file"]))
    assert fast.data.dtype == np.uint16 and np.array_equal(fast.data, raw)
    assert fast.header["BZERO"] == 32768
    other = tmp_path / "float.fits"
    fits.PrimaryHDU(raw.astype(np.float32) + 0.5, header=fits.Header()).writeto(other)
    slow = read_raw(str(other))
    assert slow.data.dtype.kind == "f" and np.array_equal(slow.data, raw + np.float32(0.5))


# --------------------------------------------------------------------------- combine


def test_sigma_clip_combine_rejects_outliers() -> None:
    rng = np.random.default_rng(3)
    frames = [rng.normal(100.0, 4.0, (40, 50)).astype(np.float32) for _ in range(8)]
    frames[2][10, 10] += 5000.0  # a cosmic ray in one frame
    frames[5][20, 30] -= 400.0
    masks = [np.zeros((40, 50), np.uint16) for _ in range(8)]
    masks[1][0, 0] = Flag.SATURATED
    frames[1][0, 0] = 1e6
    comb = sigma_clip_combine(frames, variances=[16.0] * 8, masks=masks, chunk_bytes=4096)
    assert abs(comb.data[10, 10] - 100.0) < 6.0 and comb.n_used[10, 10] == 7
    assert abs(comb.data[20, 30] - 100.0) < 6.0 and comb.n_used[20, 30] == 7
    assert abs(comb.data[0, 0] - 100.0) < 6.0 and comb.n_used[0, 0] == 7
    assert float(np.median(comb.variance)) == pytest.approx(2.0, rel=0.01)
    assert abs(float(comb.data.mean()) - 100.0) < 0.3
    # no variances: the noise comes from the stack itself
    blind = sigma_clip_combine(frames)
    assert blind.n_used[10, 10] == 7
    med = sigma_clip_combine(frames, variances=[16.0] * 8, method="median")
    assert abs(med.data[10, 10] - 100.0) < 6.0
    with pytest.raises(ValueError):
        sigma_clip_combine([frames[0], frames[1][:10]])


# ----------------------------------------------------------------------- cosmic rays


def cosmic_score(
    found: np.ndarray, f: dict[str, Any], sec: Section, signal: np.ndarray, known: np.ndarray
) -> dict[str, float]:
    """Events removed (every pixel above 5 sigma of local noise flagged), false pixels."""
    origin = (sec.y0, sec.x0)
    score = score_cosmic_rays(f, found, origin, known, signal, 3.89)
    return {
        "events": score.events,
        "missed": score.missed,
        "removed": score.removed,
        "false": int(score.false.sum()),
        "false_on_trace": int((score.false & near_trace(f, origin, found.shape)).sum()),
    }


def assert_cosmic_quality(
    s: dict[str, float], what: str, min_events: int, min_removed: float = 0.99
) -> None:
    """The promised quality, with the measured figures in every message."""
    figures = (
        f"{what}: {s['removed']:.2%} of {s['events']} events removed ({s['missed']} missed), "
        f"{s['false']} false pixels, {s['false_on_trace']} on the trace"
    )
    assert s["events"] > min_events, figures
    assert s["removed"] >= min_removed, figures
    assert s["false"] <= 1, figures
    assert s["false_on_trace"] == 0, figures


def known_defects(truth: dict[str, Any], header: fits.Header, shape: tuple[int, int]) -> Any:
    sec = parse_section(header["TRIMSEC"])
    return truth_defects(truth, header["ROI"], (sec.y0, sec.x0), shape), sec


def test_cosmics_2x2_spectra(night2: Night, masters2: dict[str, Any]) -> None:
    for f, raw, header in night2.kind("science_spectrum"):
        c = calibrate_frame(
            raw, header, master_bias=masters2["bias"], bad_pixel_mask=masters2["bpm"].mask
        )
        found = detect_cosmics(
            c.data, read_noise=3.89, mask=c.mask, binning=2,
            extra_variance=masters2["bias"].variance,
        )  # fmt: skip
        known, sec = known_defects(night2.truth, header, c.data.shape)
        known |= (c.mask & (Flag.HOT | Flag.BAD_COLUMN)) != 0
        s = cosmic_score(found.mask, f, sec, found.cleaned, known)
        assert_cosmic_quality(s, f"2x2 seed {SEED} {f['file']}", 200)
        # cleaning removes the charge: no pixel stays far above the smooth estimate
        assert float(np.max(found.cleaned[found.mask] - c.data[found.mask])) <= 0.0


def _spectra_night(
    tmp_path: Path, ref_home: Path, seed: int, *, binning: int, biases: int, spectra: int
) -> tuple[Night, Any, Any]:
    """A night of biases and long-slit spectra only, its master bias and bad-pixel mask."""
    simulate_night(
        tmp_path, seed=seed, binning=binning, home=ref_home, n_bias=biases, n_flat=0, n_arc=0,
        n_science_spectra=spectra, n_science_images=0,
    )  # fmt: skip
    night = Night(tmp_path)
    master = make_master_bias([calibrate_frame(r, h) for _, r, h in night.kind("bias")])
    return night, master, bad_pixel_mask(master)


@pytest.mark.parametrize("seed", [SEED + 1, SEED + 2])
def test_cosmics_2x2_spectra_more_seeds(seed: int, tmp_path: Path, ref_home: Path) -> None:
    """The same promise on other nights, through the pipeline's own call.

    Over the two frames of a night at least 99 % of events are removed, but a single frame
    can fall just short: over seeds 22-27 the worst of twelve frames kept 4 of 391 events
    (98.98 %), each a pixel 5-8 sigma above the sky, next to a hit or alone.
    """
    night, master, bpm = _spectra_night(tmp_path, ref_home, seed, binning=2, biases=5, spectra=2)
    events = missed = 0
    for f, raw, header in night.kind("science_spectrum"):
        c = calibrate_frame(raw, header, master_bias=master, bad_pixel_mask=bpm.mask, cosmics=True)
        found = (c.mask & Flag.COSMIC_RAY) != 0
        known, sec = known_defects(night.truth, header, c.data.shape)
        known |= (c.mask & (Flag.HOT | Flag.BAD_COLUMN)) != 0
        s = cosmic_score(found, f, sec, c.data, known)
        assert_cosmic_quality(s, f"2x2 seed {seed} {f['file']}", 150, min_removed=0.985)
        events += s["events"]
        missed += s["missed"]
    removed = 1.0 - missed / events
    assert removed >= 0.99, f"2x2 seed {seed}: {removed:.2%} of {events} events removed"


@pytest.mark.parametrize("seed", [SEED + 1, SEED + 3])
def test_cosmics_1x1_science_frame(seed: int, tmp_path: Path, ref_home: Path) -> None:
    night, master, bpm = _spectra_night(tmp_path, ref_home, seed, binning=1, biases=3, spectra=1)
    f, raw, header = night.kind("science_spectrum")[0]
    plain = calibrate_frame(raw, header, master_bias=master, bad_pixel_mask=bpm.mask)
    c = calibrate_frame(raw, header, master_bias=master, bad_pixel_mask=bpm.mask, cosmics=True)
    found = (c.mask & Flag.COSMIC_RAY) != 0
    known, sec = known_defects(night.truth, header, c.data.shape)
    known |= (c.mask & (Flag.HOT | Flag.BAD_COLUMN)) != 0
    s = cosmic_score(found, f, sec, c.data, known)
    assert_cosmic_quality(s, f"1x1 seed {seed} {f['file']}", 250)
    assert c.header_updates["NCREVENT"][0] > 250
    # flagged pixels are cleaned, the rest untouched
    assert np.array_equal(c.data[~found], plain.data[~found])
    assert float((plain.data - c.data)[found].min()) >= 0.0


# ---------------------------------------------------------------------------- fitsio


def test_product_round_trip_and_atomic_write(
    night2: Night, masters2: dict[str, Any], tmp_path: Path
) -> None:
    _, raw, header = night2.kind("arc")[0]
    c = calibrate_frame(raw, header, masters2["bias"], masters2["flat"].flat, masters2["bpm"].mask)
    path = write_product(
        tmp_path / "p" / "arc.fits",
        c,
        header,
        provenance={"PROCSOFT": ("vo-service test", "software"), "MBIAS": "mb.fits"},
    )
    assert sorted(os.listdir(path.parent)) == ["arc.fits"]  # no temporary left behind
    back, primary = read_product(path)
    assert np.array_equal(back.data, c.data)
    assert np.array_equal(back.mask, c.mask)
    assert np.allclose(back.variance, c.variance, rtol=1e-5)
    assert primary["PROCSOFT"] == "vo-service test" and primary["BUNIT"] == "electron"
    assert "BIASSEC" not in primary and primary["TRIMMED"] == header["TRIMSEC"]
    with fits.open(path, checksum=True) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "MASK"]
        assert hdul["MASK"].data.dtype == np.uint8
        assert hdul["MASK"].header["MASKB4"] == "COSMIC_RAY"
    with pytest.raises(FileExistsError):
        write_product(path, c, header, overwrite=False)


@pytest.mark.parametrize("direct", [True, False])
def test_atomic_write_is_astropys_file(
    direct: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The writer's own encoding of plain images gives astropy's bytes (same checksum
    timestamp), checksums astropy accepts, and the SHA-256 of the file; anything else
    (tables, scaled integers) is left to astropy. The same with direct I/O and without
    it (a system without ``O_DIRECT``), and for planes larger than the write buffer."""
    import datetime as dt
    import hashlib
    import types

    import astropy.io.fits.hdu.base as hdu_base

    from ingest.reduce import fitsio

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(fitsio, "datetime", Frozen)
    monkeypatch.setattr(hdu_base, "datetime", types.SimpleNamespace(datetime=Frozen))
    if not direct:
        monkeypatch.delattr(os, "O_DIRECT", raising=False)

    def lists(seed: int) -> list[fits.HDUList]:
        rng = np.random.default_rng(seed)
        out = []
        for shape, top in (((7, 5), 3), ((40, 33), 300), ((1, 1), 2), ((1100, 1001), 40)):
            frame = CalibratedFrame(
                rng.normal(0, 10, shape).astype(np.float32),
                rng.uniform(0, 10, shape).astype(np.float32),
                rng.integers(0, top, shape).astype(np.uint16),
            )
            out.append(product_hdul(frame, fits.Header([("OBJECT", "x", "a target")])))
        spectrum = fits.PrimaryHDU(rng.random(11).astype(np.float32))
        odd = fits.ImageHDU(rng.integers(0, 2, 11).astype(np.uint8), name="MASK")
        out.append(fits.HDUList([spectrum, odd, fits.ImageHDU(rng.random((2, 3)))]))
        table = fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.arange(3.0))])
        out.append(fits.HDUList([fits.PrimaryHDU(), table]))
        return out

    plain = [fitsio._plain_images(h) is not None for h in lists(1)]
    assert plain == [True, False, True, True, True, False]  # uint16 masks, tables: astropy
    for n, (ours, theirs) in enumerate(zip(lists(1), lists(1), strict=True)):
        size, sha = fitsio.write_atomic(ours, tmp_path / f"{n}.fits")
        data = (tmp_path / f"{n}.fits").read_bytes()
        theirs.writeto(tmp_path / f"ref{n}.fits", checksum=True)
        assert data == (tmp_path / f"ref{n}.fits").read_bytes()
        assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
        with fits.open(tmp_path / f"{n}.fits", checksum=True) as hdul:
            assert all(h._checksum_valid and h._datasum_valid for h in hdul)
