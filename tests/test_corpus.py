"""Every file of the generated corpus of bad inputs through the engine's reading paths.

The corpus (tests/corpus/make_corpus.py) is generated into a temporary folder. For each
case the engine must either load it (right shape and dtype) or raise a UnetCoreError of the
expected class whose message is one line, names the file, holds no traceback and matches
the case's regex; quickly and without big allocations. Nothing may be written outside
temporary folders, payloads must never run, and open_dataset's temporary folders must be
gone afterwards. A few cases also go through the CLI (in-process).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from corpus.make_corpus import ESCAPE_TAG, MARKER_PREFIX, CorpusCase, build_corpus, list_cases

from unet_core import errors
from unet_core.cli import main
from unet_core.errors import MaskError, UnetCoreError
from unet_core.io import find_pairs, load_pair, open_dataset, read_image, read_mask

REPO = Path(__file__).resolve().parents[1]
SYSTEM_TMP = Path(tempfile.gettempdir())
CASES = list_cases()
SECONDS_PER_CASE = 5.0  # bombs must be refused, not decoded slowly
PEAK_BYTES = 48 << 20  # Python/numpy allocations while reading one image file
TF_TEMP_FILES = "__autograph_generated_file"  # TensorFlow's own cache of traced functions


def cases(kind: str) -> list[pytest.param]:
    return [pytest.param(c, id=c.name) for c in CASES if c.kind == kind]


def _guarded_files() -> dict[str, int]:
    """mtimes of the files that an engine bug writing 'next to' its inputs could clobber."""
    found = {}
    for folder in (REPO / "unet_core", REPO / "tests" / "corpus"):
        for p in folder.rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                found[str(p.relative_to(REPO))] = p.stat().st_mtime_ns
    return found


def _stray_files() -> list[Path]:
    """Files that only an escaped zip member or a payload that ran could have created."""
    stray = []
    tags = (ESCAPE_TAG, MARKER_PREFIX)
    roots = [SYSTEM_TMP, Path("/"), REPO, REPO / "tests", REPO / "unet_core"]
    for root in roots:
        try:
            stray += [p for p in root.iterdir() if any(t in p.name for t in tags)]
        except OSError:
            continue
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in (".venv", ".git", "runs", "node_modules")]
        stray += [Path(folder, f) for f in [*dirs, *files] if any(t in f for t in tags)]
    return stray


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = _guarded_files()
    strays_before = set(_stray_files())
    root = tmp_path_factory.mktemp("corpus")
    built = build_corpus(root)
    assert [c.id for c in built] == [c.id for c in CASES]
    yield root
    # after every test of this module
    assert _guarded_files() == before, "a source file was written during the corpus tests"
    assert set(_stray_files()) == strays_before
    assert not [p for p in root.rglob(f"*{MARKER_PREFIX}*")], "a payload ran"
    assert not [p for p in root.parent.rglob(f"*{ESCAPE_TAG}*")]


@pytest.fixture(autouse=True)
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Temporary files of the engine go to a private folder; cwd is an empty folder."""
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("UNET_MAX_PIXELS", raising=False)
    yield private_tmp
    left = [p.name for p in private_tmp.iterdir() if not p.name.startswith(TF_TEMP_FILES)]
    assert left == [], "temporary files left behind"
    assert sorted(p.name for p in cwd.iterdir()) == [], "files written to the current folder"


def check_error(
    case: CorpusCase, exc: BaseException, expected: type | None = None, regex: bool = True
) -> str:
    """The error contract: class, one line, names the file, no traceback, regex."""
    expected = expected or getattr(errors, case.error)
    message = str(exc)
    assert isinstance(exc, UnetCoreError), f"{type(exc).__name__}: {message}"
    assert isinstance(exc, expected), f"{type(exc).__name__} is not {expected.__name__}"
    assert "\n" not in message and "\r" not in message, message
    assert "Traceback" not in message
    assert case.names in message, f"{case.names!r} not named in {message!r}"
    if regex:
        assert re.search(case.match, message), f"{case.match!r} does not match {message!r}"
    assert "unet_dataset_" not in message, f"temporary folder in {message!r}"
    assert len(message) < 800
    return message


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    def apply(case: CorpusCase) -> None:
        for key, value in case.env.items():
            monkeypatch.setenv(key, value)

    return apply


class Budget:
    """Time and allocation budget for reading one case."""

    def __enter__(self) -> Budget:
        tracemalloc.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        _, self.peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    def check(self, case: CorpusCase) -> None:
        assert self.seconds < SECONDS_PER_CASE, f"{case.name}: {self.seconds:.1f} s"
        assert self.peak < PEAK_BYTES, f"{case.name}: peak {self.peak / 2**20:.0f} MiB"


def check_image(case: CorpusCase, image: np.ndarray) -> None:
    assert image.dtype == np.float32
    assert image.shape == case.shape
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0
    if case.value is not None:
        np.testing.assert_allclose(image, case.value, atol=1e-6)
    if case.vmin is not None:
        assert image.min() == pytest.approx(case.vmin, abs=1e-6)
    if case.vmax is not None:
        assert image.max() == pytest.approx(case.vmax, abs=1e-6)


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_big_and_covers_every_kind() -> None:
    assert len(CASES) >= 30
    assert {c.kind for c in CASES} == {"image", "mask_pair", "zip", "model"}
    assert {c.expect for c in CASES} == {"ok", "error"}
    for case in CASES:
        if case.expect == "error":
            re.compile(case.match)
            assert isinstance(getattr(errors, case.error), type)


def test_script_writes_manifest(tmp_path: Path) -> None:
    from corpus.make_corpus import main as make

    assert make([str(tmp_path / "c")]) == 0
    import json

    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert [m["name"] for m in manifest] == [c.name for c in CASES]
    assert (tmp_path / "c" / "bomb_100000x100000.png").stat().st_size < 200


@pytest.mark.parametrize("case", cases("image"))
def test_image(case: CorpusCase, corpus_dir: Path, env, caplog) -> None:  # noqa: ANN001
    env(case)
    caplog.set_level(logging.DEBUG)
    path = case.path(corpus_dir)
    try:
        _check_image_case(case, path)
    finally:
        # nothing logged either: on the CLI, a log record would print next to the one-line
        # error (tifffile logs every malformed tag it meets)
        logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records
                  if r.levelno >= logging.WARNING]
        assert logged == []


def _check_image_case(case: CorpusCase, path: Path) -> None:
    if case.expect == "error":
        with Budget() as budget, pytest.raises(UnetCoreError) as exc:
            read_image(path, max_pixels=case.max_pixels)
        budget.check(case)
        message = check_error(case, exc.value)
        # read as a mask: a MaskError with the same contract
        with pytest.raises(UnetCoreError) as exc:
            read_mask(path, max_pixels=case.max_pixels)
        check_error(case, exc.value, MaskError, regex=False)
        if path.is_file():  # the dashboard's path: bytes / an uploaded file object
            for source in (path.read_bytes(), io.BytesIO(path.read_bytes())):
                with pytest.raises(UnetCoreError) as exc:
                    read_image(source, name=case.name, max_pixels=case.max_pixels)
                assert str(exc.value) == message
        return
    with Budget() as budget:
        image = read_image(path, max_pixels=case.max_pixels)
    budget.check(case)
    check_image(case, image)
    mask = read_mask(path, max_pixels=case.max_pixels)
    assert mask.dtype == np.bool_ and mask.shape == case.shape
    np.testing.assert_array_equal(read_image(path.read_bytes(), name=case.name), image)


@pytest.mark.parametrize("case", cases("mask_pair"))
def test_mask_pair(case: CorpusCase, corpus_dir: Path) -> None:
    root = case.path(corpus_dir)

    def load() -> list[tuple[np.ndarray, np.ndarray | None]]:
        return [load_pair(p, max_pixels=case.max_pixels) for p in find_pairs(root)]

    if case.expect == "error":
        with pytest.raises(UnetCoreError) as exc:
            load()
        check_error(case, exc.value)
        return
    loaded = load()
    assert len(loaded) == (case.pairs or 1)
    for image, mask in loaded:
        check_image(case, image)
        assert mask is not None and mask.dtype == np.bool_ and mask.shape == case.shape
        if case.expected_mask is not None:
            np.testing.assert_array_equal(mask, np.array(case.expected_mask, dtype=bool))


@pytest.mark.parametrize("case", cases("zip"))
def test_zip(case: CorpusCase, corpus_dir: Path, sandbox: Path) -> None:
    path = case.path(corpus_dir)
    extracted: list[Path] = []

    def load(source: object, name: str | None) -> int:
        with open_dataset(source, name=name) as folder:  # type: ignore[arg-type]
            extracted.append(folder)
            assert folder.resolve().is_relative_to(sandbox.resolve())
            pairs = find_pairs(folder)
            loaded = [load_pair(p) for p in pairs]
        for image, mask in loaded:
            check_image(case, image)
            assert mask is not None and mask.shape == image.shape
        return len(pairs)

    # a path (CLI), the bytes and a file object (what the dashboard gets from an upload)
    sources = [(path, None), (path.read_bytes(), case.name), (io.BytesIO(path.read_bytes()),
                                                             case.name)]
    messages = set()
    for source, name in sources:
        if case.expect == "error":
            with Budget() as budget, pytest.raises(UnetCoreError) as exc:
                load(source, name)
            budget.check(case)
            messages.add(check_error(case, exc.value))
        else:
            assert load(source, name) == case.pairs
    assert len(messages) <= 1, messages
    for folder in extracted:
        assert not folder.exists(), "open_dataset left its temporary folder behind"


@pytest.mark.parametrize("case", cases("model"))
def test_model(case: CorpusCase, corpus_dir: Path) -> None:
    from unet_core.model import load_model

    path = case.path(corpus_dir)
    if case.expect == "error":
        with pytest.raises(UnetCoreError) as exc:
            load_model(path)
        check_error(case, exc.value)
    else:
        loaded = load_model(path)
        assert tuple(loaded.model.inputs[0].shape)[-1] == 1
        out = loaded.model(np.zeros((1, 8, 8, 1), np.float32))
        assert tuple(out.shape) == (1, 8, 8, 1)
    assert not list(corpus_dir.glob(f"{MARKER_PREFIX}*")), "a payload ran"


# --------------------------------------------------------------------------- the CLI


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, err.splitlines(), out


@pytest.mark.parametrize(
    "name",
    ["text.png", "truncated.tif", "bomb_100000x100000.png", "float32_nan.tif", "gif_named.png",
     "deflate_bomb.tif", "tile_bomb.tif", "huge_dims.bmp"],
)
def test_cli_predict_bad_image(capsys, corpus_dir: Path, tmp_path: Path, name: str) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    code, lines, stdout = cli(capsys, "predict", "--model", str(corpus_dir / "tiny.keras"),
                              str(corpus_dir / name), "--out", str(out))
    assert code == 1
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"error: {name}: ")
    assert lines[1].startswith(
        f"wrote 0 mask(s) and probability map(s) to {out} (threshold 0.5; backend ")
    assert stdout == ""
    assert list(out.iterdir()) == []


def test_cli_predict_mixed_inputs(capsys, corpus_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    bad = ["text.png", "truncated.tif", "deflate_bomb.tif"]
    good = ["constant.png", "my scan 01.png", "ñandú 画像 ü.png", "jpeg_named.png"]
    out = tmp_path / "out"
    code, lines, _ = cli(capsys, "predict", "--model", str(corpus_dir / "tiny.keras"),
                         *[str(corpus_dir / n) for n in bad + good], "--out", str(out))
    assert code == 1
    text = "\n".join(lines)
    for name in bad:  # (lines may carry the progress bar's text before "error:")
        assert text.count(f"error: {name}: ") == 1
    assert f"wrote {len(good)} mask(s)" in text
    stems = sorted(Path(n).stem for n in good)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_mask.png" for s in stems] + [f"{s}_prob.npy" for s in stems])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["inspect", "--model", "{c}/pickle.keras"], "pickle.keras: pickle files are refused"),
        (["inspect", "--model", "{c}/os_system.keras"], "os_system.keras: refused"),
        (["inspect", "--model", "{c}/config_deep.h5"], "config_deep.h5: HDF5 model config"),
        (["evaluate", "--model", "{c}/tiny.keras", "--data", "{c}/traversal.zip"],
         "traversal.zip: refusing path"),
        (["evaluate", "--model", "{c}/tiny.keras", "--data", "{c}/bomb.zip"], "zip bomb"),
        (["evaluate", "--model", "{c}/tiny.keras", "--data", "{c}/missing_mask_inside.zip"],
         "missing_mask_inside.zip: 1 of 2 images have no mask"),
        (["evaluate", "--model", "{c}/tiny.keras", "--data", "{c}/pair_size_mismatch"],
         "a.png: mask is 32x40"),
        (["predict", "--model", "{c}/tiny.keras", "{c}/anim.gif", "--out", "{t}/o"],
         "not an image file"),
    ],
    ids=["pickle", "os-system", "deep-h5", "traversal", "zip-bomb", "zip-missing-mask",
         "mask-size", "gif-extension"],
)
def test_cli_refuses_with_one_line(capsys, corpus_dir: Path, tmp_path: Path, argv: list[str],  # noqa: ANN001
                                   needle: str) -> None:
    args = [a.format(c=corpus_dir, t=tmp_path) for a in argv]
    code, lines, out = cli(capsys, *args)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert needle in lines[0]
    assert out == ""


def test_cli_process_is_fine_afterwards(capsys, corpus_dir: Path, sandbox: Path) -> None:  # noqa: ANN001
    cwd = Path.cwd()
    for bad in ("pickle.h5", "config_bomb.keras", "duplicate_config.keras", "bad_card.keras"):
        code, lines, _ = cli(capsys, "inspect", "--model", str(corpus_dir / bad))
        assert code == 2 and len(lines) == 1 and bad.split(".")[0] in lines[0]
    code, lines, out = cli(capsys, "evaluate", "--model", str(corpus_dir / "tiny.keras"),
                           "--data", str(corpus_dir / "good.zip"), "--json")
    assert code == 0, lines
    assert '"n": 3' in out
    code, _, out = cli(capsys, "inspect", "--model", str(corpus_dir / "SHOUT.KERAS"))
    assert code == 0 and "Conv2D" in out
    assert Path.cwd() == cwd
    assert not [p for p in sandbox.iterdir() if not p.name.startswith(TF_TEMP_FILES)]
    assert read_image(corpus_dir / "constant.png").shape == (16, 16)
    assert not list(corpus_dir.glob(f"{MARKER_PREFIX}*"))
    assert os.environ.get("UNET_MAX_PIXELS") is None


# --------------------------------------------------------------------------- every case, CLI


def test_cli_predict_every_image_case(capsys, corpus_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """Every image case through ``predict`` (a few calls, inputs of one call have distinct
    stems): one line per bad file, outputs for the good ones, never a traceback."""
    from corpus.make_corpus import FORGED_NAME

    from unet_core.io import IMAGE_EXTENSIONS, display_name

    groups: list[list[CorpusCase]] = []
    for param in cases("image"):
        case = param.values[0]
        path = case.path(corpus_dir)
        if case.env or case.max_pixels is not None or not path.is_file() \
                or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        group = next((g for g in groups if path.stem not in {c.path(corpus_dir).stem for c in g}),
                     None)
        if group is None:
            groups.append(group := [])
        group.append(case)
    seen_forged = False
    for i, group in enumerate(groups):
        out = tmp_path / f"out{i}"
        code, lines, stdout = cli(capsys, "predict", "--model", str(corpus_dir / "tiny.keras"),
                                  *[str(c.path(corpus_dir)) for c in group], "--out", str(out))
        text = "\n".join(lines)
        bad = [c for c in group if c.expect == "error"]
        good = [c for c in group if c.expect == "ok"]
        assert code == (1 if bad else 0), text
        for case in bad:
            assert text.count(f"error: {display_name(Path(case.name).name)}: ") == 1, case.name
        assert sum("error: " in ln for ln in lines) == len(bad), text
        assert not any(ln.startswith("error: forged") for ln in lines)
        seen_forged |= display_name(FORGED_NAME) in text
        assert f"wrote {len(good)} mask(s)" in text
        assert stdout == ""
    assert seen_forged


@pytest.mark.parametrize("case", [p for p in cases("zip") + cases("mask_pair")
                                  if not p.values[0].env and p.values[0].max_pixels is None])
def test_cli_evaluate_every_data_case(capsys, corpus_dir: Path, case: CorpusCase) -> None:  # noqa: ANN001
    """Every zip and folder case through ``evaluate``: a result, or exactly one error line."""
    code, lines, stdout = cli(capsys, "evaluate", "--model", str(corpus_dir / "tiny.keras"),
                              "--data", str(case.path(corpus_dir)), "--json")
    if case.expect == "ok":
        assert code == 0, lines
        assert '"n": ' in stdout
        return
    assert code == 2, lines
    errors_ = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors_) == 1 and errors_ == lines[-1:], lines
    assert re.search(case.match, errors_[0]), (case.match, errors_[0])
    assert stdout == ""
