"""Errors on the page: one line each, never a traceback (the traceback goes to the log)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st

from app.settings import LOG
from unet_core.errors import UnetCoreError


def one_line(text: str, limit: int = 400) -> str:
    """Collapse whitespace to one line and cap its length."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


#: Every ASCII punctuation character: CommonMark lets any of them be backslash-escaped, and
#: escaping them all turns off every markdown construct Streamlit renders (links, images,
#: emphasis, code, headings, lists, tables, ``:red[...]`` colour directives, ``$`` maths,
#: HTML and entities, GFM autolinks such as ``http://...``).
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
#: Characters that are not shown as they are: C0/C1 controls, line and paragraph separators,
#: bidirectional overrides and zero-width marks (a name must not forge lines or reorder text).
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def display_text(text: object, limit: int = 400) -> str:
    """A user-supplied string made safe to show anywhere (markdown or not): whitespace
    (newlines too) collapsed to one line, other control and invisible characters written
    as escapes (``unet_core.io.display_name``; replaced by '?' where the engine lacks it),
    length capped (a long name keeps its start and end). Not markdown-escaped: for widget
    options, image captions, data frames."""
    raw = one_line(str(text), 1_000_000)
    try:
        from unet_core.io import display_name
    except ImportError:  # an engine without it
        return one_line(_INVISIBLE.sub("?", raw), limit)
    try:
        return str(display_name(raw, max_len=max(8, limit)))
    except Exception:  # never let the helper break a page
        return one_line(_INVISIBLE.sub("?", raw), limit)


def plain(text: object, limit: int = 400) -> str:
    """``text`` (a file name, zip member, card field, or a message holding them) as plain text
    for anything Streamlit renders as markdown (st.error / warning / info / caption /
    markdown / title, widget labels and help): :func:`display_text`, then every ASCII
    punctuation character backslash-escaped, so no link, image, emphasis, colour or HTML is
    rendered and the browser fetches nothing. Use it at every place a user string reaches
    the page."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", display_text(text, limit))


GENERIC = "Unexpected error while {what}; the details are in the server log"


def error_message(exc: BaseException, what: str = "") -> str:
    """What the page shows for an exception, as plain text: the engine's own one line for a
    :class:`UnetCoreError`; for anything else (an exception from inside TensorFlow, Keras,
    ONNX Runtime or our own code) a generic line: its text may hold server paths and source
    lines, so it goes to the server log only."""
    if isinstance(exc, UnetCoreError):
        return plain(str(exc))
    return plain(GENERIC.format(what=what or "working on it"))


@contextlib.contextmanager
def run_safely(container: Any = None, what: str = "") -> Iterator[None]:
    """Show errors of the block as ONE ``st.error`` line; never a traceback on the page.

    A :class:`UnetCoreError` shows its message (as plain text: it may hold file names); any
    other exception shows 'Unexpected error while <what>; the details are in the server log'
    and its traceback goes to the server log. Streamlit's
    own control flow (st.stop, st.rerun, st.switch_page) passes through. The code after the
    ``with`` block keeps running, so the rest of the page still works.
    """
    target = container if container is not None else st
    try:
        yield
    except UnetCoreError as exc:
        LOG.info("user error%s: %s", f" ({what})" if what else "", one_line(str(exc)))
        target.error(error_message(exc, what))
    except Exception as exc:
        LOG.exception("unexpected error%s", f" ({what})" if what else "")
        target.error(error_message(exc, what))


def safe_call(fn: Callable[..., Any], *args: Any, container: Any = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` under :func:`run_safely`; None if it failed."""
    with run_safely(container, getattr(fn, "__name__", "")):
        return fn(*args, **kwargs)
    return None
