"""Where a session's uploads live on disk: one folder per session, with a byte budget.

Every uploaded model (with its weights and card) and every extracted zip is written under
``<root>/<session id>/`` (:func:`session_dir`), ``<root>`` being ``$UNET_UPLOAD_DIR`` or
``<system temp>/unet-uploads``. Before anything is written, :func:`reserve` checks that the
session's folder stays within ``$UNET_SESSION_DISK_MB`` (default 512 MB) and refuses with one
line otherwise.

Folders are removed by sweeps, never in ``__del__``:

* :func:`sweep_gone_sessions` (run at most every :data:`SWEEP_EVERY_S` seconds, from any
  session's script run and from a daemon thread, :func:`start_sweeper`) removes the
  folders of sessions this server no longer holds (closed, or dropped after a disconnect
  and ``server.disconnectedSessionTTL``): a session's folder goes soon after it ends;
* :func:`sweep_at_startup` (once per server process) removes folders left by servers that
  are gone (their owner process is dead, or the folder predates this server and has no
  owner record).

Each folder holds an ``.owner`` file (the server's pid and start time) so that servers
sharing a root never remove each other's live folders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from app.settings import LOG
from unet_core.errors import UnetCoreError

#: Default byte budget of one session's folder (MB): $UNET_SESSION_DISK_MB.
SESSION_DISK_MB = 512
#: Seconds between two sweeps of the folders of ended sessions.
SWEEP_EVERY_S = 10.0
OWNER_FILE = ".owner"

_STARTED = time.time()
_PID = os.getpid()
_LOCK = threading.Lock()
_state: dict[str, float | bool] = {"last_sweep": 0.0, "startup_done": False}


class UploadBudgetError(UnetCoreError):
    """A session's uploads would take more disk than its budget."""


def upload_root() -> Path:
    """``$UNET_UPLOAD_DIR``, else ``<system temp>/unet-uploads``."""
    value = os.environ.get("UNET_UPLOAD_DIR", "").strip()
    return Path(value).expanduser() if value else Path(tempfile.gettempdir()) / "unet-uploads"


def session_budget_bytes() -> int:
    """A session's disk budget in bytes (``$UNET_SESSION_DISK_MB`` MB, default 512)."""
    try:
        mb = float(os.environ.get("UNET_SESSION_DISK_MB", "") or SESSION_DISK_MB)
    except ValueError:
        mb = SESSION_DISK_MB
    return int(max(0.0, mb) * 1_000_000)


def current_session_id() -> str:
    """The Streamlit session id of the running script ('nosession' outside a script run)."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx(suppress_warning=True)
    except Exception:  # pragma: no cover - Streamlit internals moved
        ctx = None
    sid = getattr(ctx, "session_id", None) or "nosession"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(sid))[:80]


def session_dir(session_id: str | None = None) -> Path:
    """This session's upload folder (created, with its owner record)."""
    sweep_at_startup()
    folder = upload_root() / (session_id or current_session_id())
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            (folder / OWNER_FILE).write_text(f"{_PID} {_STARTED:.3f}\n")
    return folder


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 if it does not exist)."""
    total = 0
    for base, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def root_usage() -> tuple[int, int]:
    """(session folders, bytes) under the upload root (what the tests and the soak read)."""
    root = upload_root()
    if not root.is_dir():
        return 0, 0
    folders = [p for p in root.iterdir() if p.is_dir()]
    return len(folders), sum(folder_bytes(p) for p in folders)


def remaining_bytes(session_id: str | None = None) -> int:
    """Bytes this session may still write."""
    return max(0, session_budget_bytes() - folder_bytes(session_dir(session_id)))


def reserve(nbytes: int, what: str, session_id: str | None = None) -> Path:
    """Check that ``nbytes`` more fit in this session's budget and return its folder;
    UploadBudgetError (one line, naming ``what``, plain text) otherwise."""
    folder = session_dir(session_id)
    used = folder_bytes(folder)
    budget = session_budget_bytes()
    if used + int(nbytes) > budget:
        raise UploadBudgetError(
            f"{what}: refused: this session's uploads would take {(used + nbytes) / 1e6:,.0f} "
            f"MB on disk, over the limit of {budget / 1e6:,.0f} MB per session "
            "(UNET_SESSION_DISK_MB); remove uploads or start a new session (reload the page)")
    return folder


def remove(path: Path) -> None:
    """Remove a file or folder of the upload root (errors logged, never raised)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError as exc:  # pragma: no cover - e.g. a file held open on Windows
        LOG.warning("could not remove %s: %s", path, exc)


def _owner(folder: Path) -> tuple[int, float] | None:
    try:
        pid, started = (folder / OWNER_FILE).read_text().split()[:2]
        return int(pid), float(started)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def sweep_at_startup() -> int:
    """Once per process: remove the folders of servers that are gone (owner process dead or
    another process now under its pid, or no owner record and older than this server).
    Returns how many folders were removed."""
    with _LOCK:
        if _state["startup_done"]:
            return 0
        _state["startup_done"] = True
    root = upload_root()
    removed = 0
    if not root.is_dir():
        return 0
    for folder in [p for p in root.iterdir() if p.is_dir()]:
        owner = _owner(folder)
        if owner is None:
            with contextlib.suppress(OSError):
                stale = folder.stat().st_mtime < _STARTED
            if not stale:
                continue
        else:
            pid, started = owner
            if pid == _PID and abs(started - _STARTED) < 1e-3:
                continue
            if _alive(pid) and pid != _PID:
                continue
        remove(folder)
        removed += 1
    if removed:
        LOG.info("upload sweep at start-up: removed %d leftover folder(s) under %s", removed,
                 root)
    return removed


def live_session_ids() -> set[str] | None:
    """Ids of the sessions this server holds (active or kept for a reconnect); None when
    there is no Streamlit runtime (e.g. AppTest), in which case nothing is swept."""
    try:
        from streamlit.runtime import Runtime

        if not Runtime.exists():
            return None
        manager = Runtime.instance()._session_mgr
        return {info.session.id for info in manager.list_sessions()}
    except Exception:  # pragma: no cover - Streamlit internals moved
        return None


def sweep_gone_sessions(live: Iterable[str] | None = None, force: bool = False) -> int:
    """Remove the folders this server created for sessions it no longer holds (``live``: the
    ids still held; default :func:`live_session_ids`). At most every :data:`SWEEP_EVERY_S`
    seconds unless ``force``. Returns how many folders were removed."""
    now = time.monotonic()
    with _LOCK:
        if not force and now - float(_state["last_sweep"]) < SWEEP_EVERY_S:
            return 0
        _state["last_sweep"] = now
    held = set(live) if live is not None else live_session_ids()
    if held is None:
        return 0
    root = upload_root()
    if not root.is_dir():
        return 0
    removed = 0
    for folder in [p for p in root.iterdir() if p.is_dir()]:
        owner = _owner(folder)
        if owner is None or owner[0] != _PID or folder.name in held:
            continue
        remove(folder)
        removed += 1
    if removed:
        LOG.info("upload sweep: removed the folders of %d ended session(s)", removed)
    return removed


def start_sweeper(every_s: float = SWEEP_EVERY_S) -> bool:
    """Start (once per process) a daemon thread that runs :func:`sweep_gone_sessions` every
    ``every_s`` seconds, so the folders of ended sessions go even when no other session runs
    a script. Sessions that disconnected are kept for a reconnect for
    ``server.disconnectedSessionTTL`` seconds (Streamlit's setting), then swept. Returns True
    when it started the thread now."""
    with _LOCK:
        if _state.get("sweeper"):
            return False
        _state["sweeper"] = True

    def loop() -> None:
        while True:
            time.sleep(every_s)
            try:
                sweep_gone_sessions(force=True)
            except Exception:  # keep sweeping whatever one pass met
                LOG.exception("upload sweep failed")

    threading.Thread(target=loop, name="unet-upload-sweeper", daemon=True).start()
    return True


def close_session_folder(session_id: str | None = None) -> None:
    """Remove this session's folder now (tests; a session that resets its uploads)."""
    folder = upload_root() / (session_id or current_session_id())
    if folder.is_dir():
        remove(folder)
