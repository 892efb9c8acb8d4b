"""A TLS-terminating nginx of the test's own, in front of an app on loopback.

Debian's nginx binary with a configuration, pid file, logs and temp folders under the test's
folder, on a free loopback port; it never touches a system nginx. Its certificate is made by
trustme for 127.0.0.1. It connects to the app from 127.0.0.9 (``proxy_bind``), the one address
the app is told to trust, so a client reaching the app directly from 127.0.0.1 is a stranger.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

PROXY_ADDRESS = "127.0.0.9"

CONFIG = """\
daemon off;
worker_processes 1;
{user}
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {root}/site.pem;
        ssl_certificate_key {root}/site.pem;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind {proxy_address};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_buffering off;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Nginx:
    url: str  # https://127.0.0.1:<port>
    client_tls: ssl.SSLContext  # trusts the site's certificate


def nginx_binary() -> str:
    """Debian's nginx; without it the test is skipped, except under CI (.ci/run installs it)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        if os.environ.get("CI"):
            raise RuntimeError("nginx is missing: .ci/run installs Debian's nginx")
        pytest.skip("needs Debian's nginx (apt-get install nginx)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def tls_proxy(root: Path, upstream_port: int) -> Iterator[Nginx]:
    """nginx on https://127.0.0.1:<free port> in front of http://127.0.0.1:<upstream_port>;
    stopped (its process group, started for it alone) when the block ends."""
    binary = nginx_binary()
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(root / "site.pem"))
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    port = _free_port()
    # as root the workers would become "nobody", who cannot enter the test's private folder
    user = "user root;" if os.geteuid() == 0 else ""
    config = CONFIG.format(
        root=root, port=port, upstream=upstream_port, proxy_address=PROXY_ADDRESS, user=user
    )
    (root / "nginx.conf").write_text(config)
    process = subprocess.Popen(
        [binary, "-p", str(root), "-e", str(root / "error.log"), "-c", str(root / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(root / 'error.log').read_text()}")
            time.sleep(0.05)
        yield Nginx(f"https://127.0.0.1:{port}", client_tls)
    finally:
        process.terminate()  # nginx's fast shutdown: the master stops its worker, then itself
        try:
            process.wait(10)
        finally:
            # whatever is left of the group started for it (a stuck master or worker)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
