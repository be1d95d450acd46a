"""Host and origin checks of the dashboard's server (``app/serve.py`` + ``app/security.py``).

A web page the user visits must not be able to drive the local dashboard or read it: not by a
cross-origin WebSocket to ``/_stcore/stream``, not by CORS, not by DNS rebinding (a foreign
``Host``). The unit tests check the rules; the server tests start the real server the way
``make run`` does (``python -m app.serve``, through ``tools.browser.streamlit_server``) and
talk to it with plain sockets: a hand-written WebSocket handshake and ``http.client``.
The browser test opens the dashboard in chromium at ``localhost`` and ``127.0.0.1``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
from collections.abc import Iterator

import pytest

from app.security import allowed_hosts, host_allowed, origin_allowed, refusal
from tools.browser import ARTIFACTS, BrowserError, StreamlitServer, streamlit_server

EVIL = "http://evil.example"
LAB = "lab-box.example.org"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# ---------------------------------------------------------------------------------------
# The rules (no server)
# ---------------------------------------------------------------------------------------


def test_allowed_hosts_default_and_env() -> None:
    assert allowed_hosts("") == ("localhost", "127.0.0.1", "::1")
    hosts = allowed_hosts(f" {LAB.upper()}. , 10.0.0.5:8501, [fe80::1], https://x.example:443 ,")
    assert hosts == ("localhost", "127.0.0.1", "::1", LAB, "10.0.0.5", "fe80::1", "x.example")
    with pytest.raises(ValueError, match="UNET_ALLOWED_HOSTS"):
        allowed_hosts("lab box")


@pytest.mark.parametrize(("host", "ok"), [
    ("localhost:8501", True), ("127.0.0.1:9", True), ("[::1]:8501", True), ("LOCALHOST", True),
    ("localhost.:8501", True), ("evil.example", False), ("evil.example:8501", False),
    ("localhost.evil.example", False), ("user@localhost", False), ("localhost:http", False),
    ("localhost/x", False), ("", False), (None, False), ("0.0.0.0:8501", False),
])
def test_host_allowed(host: str | None, ok: bool) -> None:
    assert host_allowed(host, allowed_hosts("")) is ok


def test_host_patterns() -> None:
    assert host_allowed("a.example.org:1", ("*.example.org",))
    assert not host_allowed("example.org:1", ("*.example.org",))
    assert not host_allowed("badexample.org", ("*.example.org",))
    assert host_allowed("anything", ("*",))


@pytest.mark.parametrize(("origin", "host", "ok"), [
    (None, "localhost:8501", True),
    ("http://localhost:8501", "localhost:8501", True),
    ("https://lab-box.example.org", "lab-box.example.org", True),
    ("http://localhost:8888", "localhost:8501", False),  # another local web app
    ("http://127.0.0.1:8501", "localhost:8501", False),
    (EVIL, "localhost:8501", False),
    ("null", "localhost:8501", False),
    ("file://", "localhost:8501", False),
    ("http://localhost:8501", None, False),
])
def test_origin_allowed(origin: str | None, host: str | None, ok: bool) -> None:
    assert origin_allowed(origin, host) is ok


def test_refusal_names_the_setting() -> None:
    assert refusal("localhost:1", None, allowed_hosts("")) is None
    assert "UNET_ALLOWED_HOSTS" in str(refusal(f"{LAB}:1", None, allowed_hosts("")))
    assert refusal(f"{LAB}:1", f"http://{LAB}:1", allowed_hosts(LAB)) is None


def test_config_turns_cors_on() -> None:
    import tomllib

    from tools.browser import ROOT

    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["enableCORS"] is True
    assert server["enableXsrfProtection"] is True
    assert not server.get("corsAllowedOrigins")
    assert set(server["allowedHosts"]) == set(allowed_hosts(""))


# ---------------------------------------------------------------------------------------
# The real server
# ---------------------------------------------------------------------------------------


def ws_handshake(port: int, host: str, origin: str | None) -> int:
    """HTTP status of a WebSocket opening handshake to /_stcore/stream (101 = accepted)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /_stcore/stream HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Protocol: streamlit"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    if status == 101:
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in head[1:] if ":" in line)}
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers.get("sec-websocket-accept") == accept, head
    return status


def http_get(port: int, path: str, host: str, origin: str | None = None,
             method: str = "GET") -> http.client.HTTPResponse:
    """``method path`` to the server on 127.0.0.1 with this Host (and Origin); body read."""
    headers = {"Host": host}
    if origin is not None:
        headers["Origin"] = origin
    if method == "OPTIONS":
        headers["Access-Control-Request-Method"] = "GET"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def _start(name: str, env: dict[str, str] | None = None) -> Iterator[StreamlitServer]:
    try:
        with streamlit_server(env=env, log_path=ARTIFACTS / f"streamlit-{name}.log") as srv:
            yield srv
    except BrowserError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def server() -> Iterator[StreamlitServer]:
    """The dashboard as `make run` starts it, no UNET_ALLOWED_HOSTS."""
    yield from _start("security", {"UNET_ALLOWED_HOSTS": ""})


@pytest.fixture(scope="module")
def lab_server() -> Iterator[StreamlitServer]:
    """The same with ``UNET_ALLOWED_HOSTS=lab-box.example.org``."""
    yield from _start("security-lab", {"UNET_ALLOWED_HOSTS": LAB})


@pytest.mark.server
@pytest.mark.timeout(180)
def test_no_cors_warning_at_start(server: StreamlitServer) -> None:
    log = server.log_tail(20_000)
    assert "enableCORS" not in log and "cross-origin" not in log, log


@pytest.mark.server
@pytest.mark.timeout(180)
def test_websocket_origin(server: StreamlitServer) -> None:
    port = server.port
    assert ws_handshake(port, f"localhost:{port}", EVIL) != 101
    assert ws_handshake(port, f"localhost:{port}", "null") != 101
    assert ws_handshake(port, f"localhost:{port}", f"http://localhost:{port + 1}") != 101
    assert ws_handshake(port, f"localhost:{port}", f"http://localhost:{port}") == 101
    assert ws_handshake(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}") == 101
    # DNS rebinding: the page's own origin, but a foreign Host.
    assert ws_handshake(port, f"evil.example:{port}", f"http://evil.example:{port}") != 101
    assert ws_handshake(port, f"{LAB}:{port}", f"http://{LAB}:{port}") != 101


@pytest.mark.server
@pytest.mark.timeout(180)
def test_http_host(server: StreamlitServer) -> None:
    port = server.port
    for path in ("/", "/_stcore/health"):
        for host in ("evil.example", f"evil.example:{port}", f"{LAB}:{port}"):
            assert http_get(port, path, host).status in (400, 403, 421), (path, host)
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            assert http_get(port, path, host).status == 200, (path, host)


@pytest.mark.server
@pytest.mark.timeout(180)
def test_cors_headers(server: StreamlitServer) -> None:
    port = server.port
    # Same origin, no Origin header: Streamlit's own CORS is on, so no wildcard.
    ok = http_get(port, "/_stcore/health", f"localhost:{port}")
    assert ok.status == 200 and ok.getheader("Access-Control-Allow-Origin") is None
    for method in ("GET", "OPTIONS"):
        for path in ("/", "/_stcore/health", "/_stcore/host-config"):
            r = http_get(port, path, f"localhost:{port}", origin=EVIL, method=method)
            allow = r.getheader("Access-Control-Allow-Origin")
            assert allow not in ("*", EVIL), (method, path, allow)
            assert r.status in (400, 403), (method, path, r.status)


@pytest.mark.server
@pytest.mark.timeout(180)
def test_allowed_hosts_env(lab_server: StreamlitServer) -> None:
    port = lab_server.port
    for path in ("/", "/_stcore/health"):
        assert http_get(port, path, f"{LAB}:{port}").status == 200
        assert http_get(port, path, f"localhost:{port}").status == 200
        assert http_get(port, path, f"evil.example:{port}").status == 403
    assert ws_handshake(port, f"{LAB}:{port}", f"http://{LAB}:{port}") == 101
    assert ws_handshake(port, f"{LAB}:{port}", EVIL) != 101
    assert ws_handshake(port, f"localhost:{port}", f"http://{LAB}:{port}") != 101


@pytest.mark.server
@pytest.mark.browser
@pytest.mark.timeout(180)
def test_dashboard_in_browser(server: StreamlitServer) -> None:
    """The dashboard connects and draws at http://localhost:PORT and http://127.0.0.1:PORT."""
    from tools.browser import assert_no_exception, chromium_browser, wait_idle

    try:
        with chromium_browser() as browser:
            for base in (f"http://localhost:{server.port}", f"http://127.0.0.1:{server.port}"):
                context = browser.new_context()
                page = context.new_page()
                page.goto(base, wait_until="domcontentloaded")
                wait_idle(page, timeout=60)
                assert_no_exception(page, base)
                context.close()
    except BrowserError as exc:
        pytest.fail(str(exc))
