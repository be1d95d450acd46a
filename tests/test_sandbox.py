"""The child-process sandbox: a good model passes, a memory hog and a slow job are killed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from unet_core import sandbox
from unet_core.errors import ModelLoadError

pytest.importorskip("keras")


def test_vet_good_model(tiny_model_path: Path) -> None:
    info = sandbox.vet_model(tiny_model_path, timeout_s=180)
    assert info["params"] > 0 and info["layers"] > 3
    assert info["seconds"] >= 0


def test_watchdog_kills_a_memory_hog() -> None:
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as exc:
        sandbox.run_in_child(sandbox._hog, (4096,), "hog.keras", memory_mb=400, timeout=60)
    msg = str(exc.value)
    assert msg == ("hog.keras: refused: loading it needed more than 400 MB "
                   "(limit UNET_VET_MEMORY_MB)")
    assert time.monotonic() - t0 < 30


def test_timeout_kills_a_slow_child() -> None:
    with pytest.raises(ModelLoadError) as exc:
        sandbox.run_in_child(sandbox._sleep, (60,), "slow.keras", memory_mb=1000, timeout=2)
    assert str(exc.value) == ("slow.keras: refused: loading it took longer than 2 s "
                              "(limit UNET_VET_TIMEOUT_S)")


def test_child_error_is_one_line() -> None:
    with pytest.raises(ModelLoadError) as exc:
        sandbox.run_in_child(sandbox._fail, ("bad.keras: not a model",), "bad.keras",
                             memory_mb=1000, timeout=60)
    assert str(exc.value) == "bad.keras: not a model"


def test_env_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNET_VET_MEMORY_MB", "300")
    monkeypatch.setenv("UNET_VET_TIMEOUT_S", "7")
    assert sandbox.memory_limit_mb() == 300 and sandbox.time_limit_s() == 7


def test_vet_refuses_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "junk.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelLoadError) as exc:
        sandbox.vet_model(bad, timeout_s=120)
    assert str(exc.value).startswith("junk.keras: ") and "\n" not in str(exc.value)


def test_watchdog_stops_a_real_parameter_bomb(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With the parameter budget lifted (as a user may), a 250 M-parameter Dense (1 GB of
    weights) is killed by the memory limit in the child; this process never allocates it."""
    import json
    import zipfile

    import keras

    inp = keras.Input((None, None, 4), name="image")
    model = keras.Model(inp, keras.layers.Dense(1, name="d")(inp))
    src = tmp_path / "src.keras"
    model.save(src)
    with zipfile.ZipFile(src) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    config = json.loads(members["config.json"])
    for entry in config["config"]["layers"]:
        if entry["name"] == "d":
            entry["config"]["units"] = 62_500_000
    members["config.json"] = json.dumps(config).encode()
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    monkeypatch.setenv("UNET_MAX_PARAMS", str(10**12))
    with pytest.raises(ModelLoadError) as exc:
        sandbox.vet_model(bomb, memory_mb=1100, timeout_s=120)
    assert str(exc.value) == ("bomb.keras: refused: loading it needed more than 1,100 MB "
                              "(limit UNET_VET_MEMORY_MB)")
