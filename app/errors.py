"""Errors on the page: one line each, never a traceback (the traceback goes to the log)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st

from app.settings import LOG
from unet_core.errors import UnetCoreError


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace to one line and cap its length."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_message(exc: BaseException) -> str:
    """What the page shows for an exception: the engine's own line, or 'Unexpected error: ...'."""
    if isinstance(exc, UnetCoreError):
        return one_line(str(exc))
    return one_line(f"Unexpected error: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def run_safely(container: Any = None, what: str = "") -> Iterator[None]:
    """Show errors of the block as ONE ``st.error`` line; never a traceback on the page.

    A :class:`UnetCoreError` shows its message; any other exception shows
    'Unexpected error: <type>: <message>' and its traceback goes to the server log. Streamlit's
    own control flow (st.stop, st.rerun, st.switch_page) passes through. The code after the
    ``with`` block keeps running, so the rest of the page still works.
    """
    target = container if container is not None else st
    try:
        yield
    except UnetCoreError as exc:
        LOG.info("user error%s: %s", f" ({what})" if what else "", one_line(str(exc)))
        target.error(error_message(exc))
    except Exception as exc:
        LOG.exception("unexpected error%s", f" ({what})" if what else "")
        target.error(error_message(exc))


def safe_call(fn: Callable[..., Any], *args: Any, container: Any = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` under :func:`run_safely`; None if it failed."""
    with run_safely(container, getattr(fn, "__name__", "")):
        return fn(*args, **kwargs)
    return None
