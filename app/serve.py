"""Start the dashboard (``app/Home.py``) behind the host and origin checks of ``app/security.py``.

    python -m app.serve [streamlit run options]     # e.g. --server.port 8501 (`make run`)
    streamlit run app/serve.py [options]            # the same

``streamlit run`` finds the ``st.App`` below and serves it with uvicorn; the app is
``app/Home.py`` as usual, with :class:`~app.security.HostOriginGuard` in front of every route
(page, media, uploads, health and the ``/_stcore/stream`` WebSocket) from the first request on.
The served hosts (localhost, plus ``UNET_ALLOWED_HOSTS``) are also given to Streamlit's own
``server.allowedHosts`` check of the WebSocket. ``streamlit run app/Home.py`` still works but
checks the Host only on the WebSocket, and only against ``.streamlit/config.toml``'s list.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # see app/Home.py: memory after a probe
os.environ.setdefault("UNET_ORT_ARENA", "0")  # see app/Home.py: memory after a large image
os.environ.setdefault("UNET_EXPORT_IN_CHILD", "1")  # see app/Home.py: the exporter's peak


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (``MALLOC_ARENA_MAX``, unless the environment sets it).

    Streamlit runs every session's script in its own thread and glibc gives busy threads
    their own arenas, whose freed memory rarely goes back to the system: over 200 uploads in 4
    sessions the server's peak went from 1,658 MB to 1,465 MB and its settled maximum from
    1,396 MB to 1,235 MB with 2 arenas (bench/soak.md). No effect off glibc.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, int(arenas))  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        pass


limit_malloc_arenas()
import streamlit as st  # noqa: E402

from app.security import HostOriginGuard, allowed_hosts  # noqa: E402

HOME = Path(__file__).resolve().with_name("Home.py")


def _keep_keras_state() -> None:
    """Streamlit calls ``keras.backend.clear_session()`` after every script run (for old
    TensorFlow graph leaks); it forces a full garbage collection (~0.2 s a run here, most of a
    rerun's cost under load) and resets Keras' global state while other sessions may be using
    their cached models. This app builds each model once and caches it, so the call is skipped
    in the server this launcher starts."""
    from streamlit.runtime.scriptrunner import script_runner

    script_runner._clean_problem_modules = lambda: None


_keep_keras_state()


def main(argv: list[str] | None = None) -> None:
    """``streamlit run app/serve.py ARGV...`` in this process (exits with its status)."""
    from streamlit.web import cli

    try:
        allowed_hosts()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    args = sys.argv[1:] if argv is None else argv
    cli.main(["run", str(Path(__file__).resolve()), *args], prog_name="streamlit")


def served_hosts() -> tuple[str, ...]:
    """The served hosts (ValueError on a malformed ``UNET_ALLOWED_HOSTS``: fails at start),
    also set as Streamlit's ``server.allowedHosts``."""
    from streamlit import config

    hosts = allowed_hosts()
    config.set_option("server.allowedHosts", list(hosts), "UNET_ALLOWED_HOSTS (app/serve.py)")
    return hosts


if __name__ == "__main__":
    main()
else:  # imported by `streamlit run app/serve.py` (as uvicorn's "serve:app")
    from starlette.middleware import Middleware

    # Written as `app = st.App(...)`: that is what `streamlit run` looks for (AST) to serve it.
    app = st.App(HOME, middleware=[Middleware(HostOriginGuard, allowed=served_hosts())])
