"""Host and origin checks in front of the dashboard's Streamlit server (DNS rebinding, CSWSH).

Streamlit 1.67 runs on Starlette/uvicorn. With ``server.enableCORS = true`` it refuses
cross-origin WebSocket connections, and ``server.allowedHosts`` limits the Host header, but on
the WebSocket (``/_stcore/stream``) only: its HTTP routes (the page, ``/media``, uploads,
``/_stcore/health``) answer any Host. :class:`HostOriginGuard` is an ASGI middleware that
``app/serve.py`` puts in front of every Streamlit route (``st.App(middleware=...)``), so it
applies from the first request on:

* a request (HTTP or WebSocket) whose ``Host`` names a host that is not served gets 403;
* a request that carries an ``Origin`` (a browser sends one on every WebSocket handshake and
  every POST) must come from the served origin itself (``Origin``'s host:port equal to
  ``Host``), else 403 (HTTP) or a refused handshake (WebSocket).

Served hosts: ``localhost``, ``127.0.0.1`` and ``::1``, on any port (a Docker port mapping
changes it), plus the comma-separated names in ``UNET_ALLOWED_HOSTS`` (e.g.
``lab-box.example.org``; ``*.example.org`` matches its subdomains).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

ENV_VAR = "UNET_ALLOWED_HOSTS"
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

_MESSAGE = (b"Forbidden: this dashboard is served only to its own hosts and origin "
            b"(see UNET_ALLOWED_HOSTS in README.md, 'Limits and safety').\n")


def _hostname(entry: str) -> str:
    """``entry`` (a host name, an IP address, ``[v6]``, optionally with a port or a scheme)
    as a lower-case host name without port, brackets or trailing dot; ValueError if empty."""
    text = entry.strip().lower()
    if "://" in text:
        text = urlsplit(text).netloc
    if text.startswith("["):
        host = text[1:text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        host = text.split(":", 1)[0]
    else:  # a name, an IPv4 address or a bare IPv6 address
        host = text
    host = host.rstrip(".")
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError(f"{ENV_VAR}: {entry!r} is not a host name")
    return host


def allowed_hosts(env: str | None = None) -> tuple[str, ...]:
    """The served host names: :data:`DEFAULT_HOSTS` plus those in ``UNET_ALLOWED_HOSTS``
    (``env`` overrides the environment variable's value)."""
    raw = os.environ.get(ENV_VAR, "") if env is None else env
    hosts = list(DEFAULT_HOSTS)
    for entry in raw.split(","):
        if entry.strip():
            host = _hostname(entry)
            if host not in hosts:
                hosts.append(host)
    return tuple(hosts)


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a ``Host`` header value (``name[:port]``) names one of ``allowed``.

    The port is not compared. ``*.example.org`` matches the subdomains of example.org and
    ``*`` any host (as in Streamlit's ``server.allowedHosts``).
    """
    if not host:
        return False
    try:
        parts = urlsplit(f"//{host}")
        name = parts.hostname
        _ = parts.port  # validates the port
    except ValueError:
        return False
    if not name or parts.username is not None or parts.password is not None or parts.path \
            or parts.query or parts.fragment:
        return False
    name = name.rstrip(".")
    for pattern in allowed:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def origin_allowed(origin: str | None, host: str | None) -> bool:
    """Whether an ``Origin`` header is the served origin: absent (not sent by a web page),
    or ``http(s)://`` + exactly the request's ``Host`` (``null`` is refused)."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(host)
            and parts.netloc.lower() == str(host).strip().lower())


def refusal(host: str | None, origin: str | None, allowed: Iterable[str]) -> str | None:
    """Why a request with these ``Host`` / ``Origin`` headers is refused, or None."""
    if not host_allowed(host, allowed):
        return f"Host {host!r} is not served (set {ENV_VAR} to add it)"
    if not origin_allowed(origin, host):
        return f"Origin {origin!r} is not the served origin (Host {host!r})"
    return None


class HostOriginGuard:
    """ASGI middleware: refuses HTTP requests (403) and WebSocket handshakes (closed before
    accept, i.e. HTTP 403) that fail :func:`refusal`; everything else passes unchanged."""

    def __init__(self, app: Any, allowed: Sequence[str] | None = None) -> None:
        self.app = app
        self.allowed = tuple(allowed) if allowed is not None else allowed_hosts()
        self._logged: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope.get("headers") or ():
            if name == b"host" and host is None:
                host = value.decode("latin-1")
            elif name == b"origin" and origin is None:
                origin = value.decode("latin-1")
        why = refusal(host, origin, self.allowed)
        if why is None:
            await self.app(scope, receive, send)
            return
        if why not in self._logged and len(self._logged) < 100:  # once per reason
            self._logged.add(why)
            from streamlit.logger import get_logger

            get_logger(__name__).warning("Refused %s %s: %s", kind, scope.get("path", ""), why)
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(_MESSAGE)).encode()),
                                (b"x-content-type-options", b"nosniff")]})
        await send({"type": "http.response.body", "body": _MESSAGE})
