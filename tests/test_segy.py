"""SEG-Y cubes: reading, slicing, the amplitude clip, writing back, and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

segyio = pytest.importorskip("segyio")

from unet_core.errors import UnetCoreError  # noqa: E402
from unet_core.segy import (  # noqa: E402
    clip_stats,
    read_segy,
    scale_amplitudes,
    write_cube,
    write_segy,
)
from unet_core.synthetic_cube import salt_cube, write_salt_cube  # noqa: E402
from unet_core.volume import READERS, WRITERS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "assets" / "volumes" / "salt_cube.sgy"
ASSET_MASK = ROOT / "assets" / "volumes" / "salt_cube_mask.sgy"


def _ramp(n_il: int = 4, n_xl: int = 5, ns: int = 6) -> np.ndarray:
    """Every sample distinct: value = 100*il + 10*xl + z (signed around zero)."""
    il, xl, z = np.meshgrid(np.arange(n_il), np.arange(n_xl), np.arange(ns), indexing="ij")
    return (100.0 * il + 10.0 * xl + z - 150.0).astype(np.float32)


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = _ramp()
    path = write_cube(tmp_path / "small.sgy", data, first_inline=10, first_crossline=20,
                      sample_interval_us=2000)
    return path, data


def _write_traces(path: Path, traces: np.ndarray, il: list[int], xl: list[int]) -> Path:
    """A raw (unstructured-spec) SEG-Y with the given traces and inline/crossline numbers."""
    spec = segyio.spec()
    spec.format = 5
    spec.samples = list(range(traces.shape[1]))
    spec.tracecount = traces.shape[0]
    with segyio.create(str(path), spec) as f:
        for i in range(traces.shape[0]):
            f.header[i] = {189: il[i], 193: xl[i], segyio.TraceField.CDP: 500 + i}
            f.trace[i] = traces[i].astype(np.float32)
    return path


def test_registered() -> None:
    assert READERS["segy"] is read_segy
    assert WRITERS["segy"] is write_segy


def test_read_geometry_and_numbers(small: tuple[Path, np.ndarray]) -> None:
    path, data = small
    v = read_segy(path)
    assert v.format == "segy" and v.axes == ("inline", "crossline", "depth")
    assert v.data.dtype == np.float32 and v.shape == (4, 5, 6)
    np.testing.assert_array_equal(v.data, data)
    assert v.meta["inlines"] == [10, 11, 12, 13]
    assert v.meta["crosslines"] == [20, 21, 22, 23, 24]
    assert v.meta["n_samples"] == 6 and v.meta["sample_interval_us"] == 2000
    assert v.meta["format"] == 5 and v.meta["inline_byte"] == 189
    assert v.meta["source"] == str(path.resolve()) and not v.meta["unstructured"]
    assert "post-stack cube" in v.notes["geometry"]


def test_crossline_sorted_file_reads_the_same(tmp_path: Path) -> None:
    data = _ramp(3, 4, 5)
    il, xl, traces = [], [], []
    for j in range(4):  # crossline-major order
        for i in range(3):
            il.append(7 + i)
            xl.append(30 + 2 * j)
            traces.append(data[i, j])
    path = _write_traces(tmp_path / "xsorted.sgy", np.array(traces), il, xl)
    v = read_segy(path)
    np.testing.assert_array_equal(v.data, data)
    assert v.meta["crosslines"] == [30, 32, 34, 36]


def test_slices_along_each_axis(small: tuple[Path, np.ndarray]) -> None:
    path, data = small
    v = read_segy(path)
    inline = v.slice("inline", 1)
    assert inline.shape == (6, 5)  # (n_samples, n_crosslines): depth downwards
    np.testing.assert_array_equal(inline, data[1].T)
    assert inline[0, 0] < inline[5, 0]  # the ramp grows with depth, downwards in the image
    xline = v.slice("crossline", 2)
    assert xline.shape == (6, 4)
    np.testing.assert_array_equal(xline, data[:, 2].T)
    depth = v.slice("depth", 3)
    assert depth.shape == (4, 5)
    np.testing.assert_array_equal(depth, data[:, :, 3])
    out = np.zeros(v.shape, np.float32)
    for i in range(v.n_slices("crossline")):
        v.put_slice(out, "crossline", i, v.slice("crossline", i))
    np.testing.assert_array_equal(out, data)


def test_clip_statistics_by_hand(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = (rng.standard_normal((3, 4, 50)) * 7.0).astype(np.float32)
    data[1, 2, 10] = 900.0  # an outlier the clip must ignore
    path = write_cube(tmp_path / "c.sgy", data)
    v = read_segy(path, clip_percentiles=(1, 99))
    c = float(np.percentile(np.abs(data.astype(np.float64)), 99))
    assert v.stats["clip"] == pytest.approx([-c, c])
    assert v.stats["abs_low"] == pytest.approx(np.percentile(np.abs(data), 1), rel=1e-5)
    assert v.stats["percentiles"] == [1.0, 99.0] and v.stats["traces_sampled"] == 12
    scaled = scale_amplitudes(v.data, v.stats)
    assert scaled.dtype == np.float32 and scaled.min() >= 0.0 and scaled.max() <= 1.0
    np.testing.assert_allclose(scaled, np.clip((data + c) / (2 * c), 0, 1), atol=1e-6)
    assert scale_amplitudes(np.zeros(1), v.stats)[0] == pytest.approx(0.5)
    assert scaled[1, 2, 10] == 1.0
    # a sample of traces: seeded, so the same clip every time
    sub = read_segy(path, sample_traces=5)
    assert sub.stats["traces_sampled"] == 5
    assert clip_stats(data, sample_traces=5) == clip_stats(data, sample_traces=5)
    assert scale_amplitudes(np.ones(2), {"clip": [0.0, 0.0]}).tolist() == [0.5, 0.5]


def test_write_back_reopens_with_the_input_geometry(small: tuple[Path, np.ndarray],
                                                    tmp_path: Path) -> None:
    path, data = small
    v = read_segy(path)
    prob = np.random.default_rng(0).random(v.shape).astype(np.float32)
    mask = (prob > 0.5).astype(np.uint8)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    p_out = write_segy(v, prob, out_dir / "small_prob.sgy", "prob")
    m_out = write_segy(v, mask, out_dir / "small_mask.sgy", "mask")
    assert sorted(x.name for x in out_dir.iterdir()) == ["small_mask.sgy", "small_prob.sgy"]
    fields = [189, 193, segyio.TraceField.CDP, segyio.TraceField.CDP_X,
              segyio.TraceField.CDP_Y, segyio.TraceField.TRACE_SEQUENCE_FILE]
    with segyio.open(str(path)) as src, segyio.open(str(p_out)) as f, \
            segyio.open(str(m_out)) as g:
        for h in (f, g):
            np.testing.assert_array_equal(h.ilines, src.ilines)
            np.testing.assert_array_equal(h.xlines, src.xlines)
            np.testing.assert_array_equal(h.samples, src.samples)
            assert h.tracecount == src.tracecount
            assert int(h.bin[segyio.BinField.Format]) == 5
            assert h.bin[segyio.BinField.Interval] == src.bin[segyio.BinField.Interval]
            assert h.text[0] == src.text[0]
            for i in range(src.tracecount):
                for fld in fields:
                    assert h.header[i][fld] == src.header[i][fld]
        np.testing.assert_array_equal(segyio.tools.cube(f), prob)
        np.testing.assert_array_equal(segyio.tools.cube(g), mask.astype(np.float32))
    back = read_segy(p_out)
    np.testing.assert_array_equal(back.data, prob)


def test_write_back_follows_the_source_trace_order(tmp_path: Path) -> None:
    data = _ramp(2, 3, 4)
    order = [(1, 2), (0, 0), (1, 0), (0, 2), (0, 1), (1, 1)]  # shuffled traces
    traces = np.array([data[i, j] for i, j in order])
    path = _write_traces(tmp_path / "shuffled.sgy", traces, [5 + i for i, _ in order],
                         [8 + j for _, j in order])
    v = read_segy(path)
    np.testing.assert_array_equal(v.data, data)
    out = write_segy(v, v.data * 2, tmp_path / "twice.sgy", "prob")
    with segyio.open(str(out), ignore_geometry=True) as f:
        np.testing.assert_array_equal(f.trace.raw[:], traces * 2)
        assert list(f.attributes(segyio.TraceField.CDP)[:]) == list(range(500, 506))


def test_unstructured_file_reads_as_a_2d_section(tmp_path: Path) -> None:
    traces = np.arange(7 * 9, dtype=np.float32).reshape(7, 9) - 30
    path = _write_traces(tmp_path / "line.sgy", traces, [0] * 7, [0] * 7)
    v = read_segy(path)
    assert v.shape == (1, 7, 9) and v.meta["unstructured"]
    assert "unstructured" in v.notes["geometry"] and "2-D section" in v.notes["geometry"]
    assert v.meta["crosslines"] == list(range(1, 8))
    section = v.slice("inline", 0)
    assert section.shape == (9, 7)  # samples down, traces across
    np.testing.assert_array_equal(section, traces.T)
    out = write_segy(v, v.data + 1, tmp_path / "line_prob.sgy", "prob")
    with segyio.open(str(out), ignore_geometry=True) as f:
        np.testing.assert_array_equal(f.trace.raw[:], traces + 1)


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UnetCoreError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_truncated_file_is_refused(small: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = small
    cut = tmp_path / "cut.sgy"
    cut.write_bytes(path.read_bytes()[:-10])
    assert "truncated" in _one_line_error(read_segy, cut)


def test_not_segy_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sgy"
    junk.write_bytes(b"not a seismic file" * 10)
    assert "not a SEG-Y file" in _one_line_error(read_segy, junk)
    noise = tmp_path / "noise.sgy"
    noise.write_bytes(np.random.default_rng(1).bytes(5000))
    assert "SEG-Y" in _one_line_error(read_segy, noise)
    assert "no such SEG-Y" in _one_line_error(read_segy, tmp_path / "absent.sgy")


def test_irregular_geometry_is_refused(tmp_path: Path) -> None:
    traces = np.ones((5, 4), np.float32)
    # a 2x3 grid with one trace missing
    path = _write_traces(tmp_path / "holes.sgy", traces, [1, 1, 1, 2, 2], [1, 2, 3, 1, 2])
    msg = _one_line_error(read_segy, path)
    assert "irregular geometry" in msg and "1 grid positions missing" in msg
    # a repeated trace (pre-stack-like)
    path = _write_traces(tmp_path / "dup.sgy", np.ones((4, 4), np.float32), [1, 1, 2, 2],
                         [1, 1, 1, 2])
    assert "repeated" in _one_line_error(read_segy, path)


def test_voxel_limit_is_refused_before_reading(small: tuple[Path, np.ndarray],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = small
    monkeypatch.setenv("UNET_MAX_VOXELS", "100")
    msg = _one_line_error(read_segy, path)
    assert "4x5x6 = 120 voxels" in msg and "UNET_MAX_VOXELS" in msg
    monkeypatch.setenv("UNET_MAX_VOXELS", "120")
    assert read_segy(path).shape == (4, 5, 6)


def test_failed_write_leaves_nothing(small: tuple[Path, np.ndarray], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = small
    v = read_segy(path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert "does not fit" in _one_line_error(write_segy, v, np.zeros((2, 2, 2)),
                                             out_dir / "x.sgy", "prob")
    assert "unknown" in _one_line_error(write_segy, v, v.data, out_dir / "x.sgy", "logits")

    def broken_create(*args, **kwargs):
        Path(args[0]).write_bytes(b"partial")  # something half-written, then a failure
        raise RuntimeError("disk full")

    monkeypatch.setattr(segyio, "create", broken_create)
    assert "disk full" in _one_line_error(write_segy, v, v.data, out_dir / "x.sgy", "prob")
    monkeypatch.undo()
    # the source changed since it was read
    write_cube(path, _ramp(4, 5, 7))
    assert "changed" in _one_line_error(write_segy, v, v.data, out_dir / "x.sgy", "prob")
    path.unlink()
    assert "gone" in _one_line_error(write_segy, v, v.data, out_dir / "x.sgy", "prob")
    assert list(out_dir.iterdir()) == []


def test_salt_cube_is_smooth_and_reproducible(tmp_path: Path) -> None:
    cube, mask = salt_cube(6, 10, 40, seed=4)
    assert cube.shape == mask.shape == (6, 10, 40)
    assert cube.dtype == np.float32 and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1} and 0 < mask.mean() < 1
    assert abs(float(cube.mean())) < 0.2 * float(cube.std())  # signed, zero-mean-ish
    # neighbouring inlines are shifted copies: inline i+1 column j == inline i column j+1
    np.testing.assert_array_equal(cube[1, :-1], cube[0, 1:])
    again, _ = salt_cube(6, 10, 40, seed=4)
    np.testing.assert_array_equal(cube, again)
    a, m = write_salt_cube(tmp_path / "s.sgy", 6, 10, 40, seed=4)
    assert m.name == "s_mask.sgy"
    v, vm = read_segy(a), read_segy(m)
    assert v.meta["inlines"][0] == 1000 and v.meta["crosslines"][0] == 2000
    np.testing.assert_array_equal(v.data, cube)
    np.testing.assert_array_equal(vm.data, mask.astype(np.float32))


def test_bundled_salt_cube_matches_its_generator(tmp_path: Path) -> None:
    assert ASSET.stat().st_size < 2**20 and ASSET_MASK.stat().st_size < 2**20
    a, m = write_salt_cube(tmp_path / "salt_cube.sgy", 24, 24, 101, seed=4)
    assert a.read_bytes() == ASSET.read_bytes()
    assert m.read_bytes() == ASSET_MASK.read_bytes()
    v = read_segy(ASSET)
    assert v.shape == (24, 24, 101) and v.slice("inline", 0).shape == (101, 24)
    assert os.path.basename(v.meta["source"]) == "salt_cube.sgy"


@pytest.mark.parametrize(("fmt", "ext"), [(1, 0), (3, 1)])
def test_write_back_from_ibm_and_int16_sources(tmp_path: Path, fmt: int, ext: int) -> None:
    spec = segyio.spec()
    spec.format, spec.ext_headers = fmt, ext
    spec.samples = list(range(7))
    spec.tracecount = 6
    path = tmp_path / f"f{fmt}.sgy"
    with segyio.create(str(path), spec) as f:
        for t in range(6):
            f.header[t] = {189: 3 + t // 3, 193: 40 + t % 3, segyio.TraceField.offset: 11 * t,
                           segyio.TraceField.SourceX: 1000 + t}
            f.trace[t] = (np.arange(7) * (t + 1) - 9).astype(np.float32 if fmt == 1 else np.int16)
        if ext:
            f.text[1] = segyio.tools.create_text_header({1: "EXTENDED"})
    v = read_segy(path)
    assert v.meta["format"] == fmt and v.shape == (2, 3, 7) and v.meta["ext_headers"] == ext
    np.testing.assert_array_equal(v.data[1, 2], np.arange(7) * 6 - 9)
    out = write_segy(v, v.data / 2, tmp_path / "half.sgy", "prob")
    with segyio.open(str(path), ignore_geometry=True) as src, \
            segyio.open(str(out), ignore_geometry=True) as g:
        assert int(g.bin[segyio.BinField.Format]) == 5 and g.ext_headers == ext
        if ext:
            assert g.text[1] == src.text[1]
        for t in range(6):
            assert dict(g.header[t]) == dict(src.header[t])
        np.testing.assert_array_equal(g.trace.raw[:], src.trace.raw[:].astype(np.float32) / 2)
