"""``python -m service.dev`` (behind `make dev`): Redis, mail sink, web app and worker at once.

Uses the Redis at REDIS_URL, or starts a private ``redis-server`` when none answers there
(its append-only file under DATA_DIR/redis, so the queue survives a restart); honcho runs
every process with prefixed output, and one Ctrl-C stops them all.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import redis
from honcho.manager import Manager
from honcho.printer import Printer
from redis.sentinel import Sentinel
from yarl import URL

from service.store.redis import connection_options
from service.store.sentinel import tls_options
from settings import Settings, load_settings

DEV_WORKER_METRICS_PORT = 9101  # unless WORKER_METRICS_PORT is set
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}
NO_REDIS_HELP = """\
No Redis answers at {url}, and `redis-server` is not installed, so none can be started.
Either install it:
    Debian/Ubuntu:  sudo apt-get install redis-server
    macOS:          brew install redis
or point REDIS_URL at a running server, e.g. REDIS_URL=redis://otherhost:6379/0 make dev"""


def _client(settings: Settings) -> redis.Redis:
    """A client of the service's Redis: REDIS_URL's, or the master the sentinels name."""
    options = settings.redis_settings
    timeouts: dict[str, Any] = {"socket_connect_timeout": 1, "socket_timeout": 1}
    if not options.sentinel:
        return redis.Redis(**connection_options(options), **timeouts)
    tls = tls_options(options)
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        options.host,
        sentinel_kwargs={**timeouts, **tls, "password": options.sentinel_password},
    )
    master: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        options.sentinel_master,
        db=options.database,
        username=options.username,
        password=options.password,
        **tls,
        **timeouts,
    )
    return master


def redis_answers(settings: Settings) -> bool:
    """Whether the service's Redis answers, connecting as the service does (password, TLS,
    through the sentinels when REDIS_SENTINELS names them)."""
    try:
        client = _client(settings)
        try:
            return bool(client.ping())
        finally:
            client.close()
            sentinels = getattr(client.connection_pool, "sentinel_manager", None)
            for sentinel in sentinels.sentinels if sentinels else ():
                sentinel.close()
    except (redis.RedisError, OSError):
        return False


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def private_redis_dir(settings: Settings) -> Path:
    """Where the private Redis keeps its append-only file: beside the users and the files."""
    return settings.data_dir.resolve() / "redis"


def private_redis_command(settings: Settings) -> str:
    """A redis-server for REDIS_URL's port, loopback only, with an append-only file under
    DATA_DIR: stopping and starting `make dev` resumes the queued and deferred jobs, as the
    users database and the uploads beside it persist. Fsynced once a second (Redis's
    default), which loses at most the last second on a crash, never on a Ctrl-C: Redis
    flushes the file as it shuts down."""
    url = URL(settings.redis_url)
    args = [
        "redis-server",
        "--port", str(url.port or 6379),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--dir", str(private_redis_dir(settings)),
    ]  # fmt: skip
    if url.password:
        args += ["--requirepass", url.password]
    return shlex.join(args)


def dev_token(settings: Settings) -> str:
    """The first of API_TOKENS, else a development token kept in DATA_DIR (made on first use).

    Kept in a file (mode 0600) so a token pasted into another shell survives a restart.
    """
    if settings.api_tokens:
        return settings.api_tokens[0]
    path = settings.data_dir / "dev-api-token"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def _redis(settings: Settings, manager: Manager) -> None:
    """Use the Redis that answers, else add a private one to ``manager``."""
    if redis_answers(settings):
        print(f"dev: using the Redis at {settings.redis_url}")
        return
    if settings.redis_sentinels:
        sys.exit(f"No Redis master answers through REDIS_SENTINELS={settings.redis_sentinels}")
    host = URL(settings.redis_url).host or ""
    if host not in LOCAL_HOSTS or shutil.which("redis-server") is None:
        sys.exit(NO_REDIS_HELP.format(url=settings.redis_url))
    folder = private_redis_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"dev: no Redis at {settings.redis_url}; starting a private redis-server ({folder})")
    manager.add_process("redis", private_redis_command(settings))


def main() -> None:
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    python = shlex.quote(sys.executable)
    bin_dir = Path(sys.executable).parent
    manager = Manager(Printer(sys.stdout))

    _redis(settings, manager)
    if port_open(settings.smtp_host, settings.smtp_port):
        print(f"dev: an SMTP server already listens on {settings.smtp_host}:{settings.smtp_port}")
    else:
        manager.add_process("mail", f"{python} -m service.dev.mailsink")
    token = dev_token(settings)
    web_env = "DASHBOARD_MAIL_PAGE=true "
    web_env += "" if settings.api_tokens else f"API_TOKENS={shlex.quote(token)} "
    manager.add_process("web", f"{web_env}{python} -m web")
    arq = shlex.quote(str(bin_dir / "arq"))
    metrics_port = settings.worker_metrics_port or DEV_WORKER_METRICS_PORT
    manager.add_process(
        "worker",
        f"WORKER_METRICS_PORT={metrics_port} "
        f"{arq} service.WorkerSettings --custom-log-dict service.LOGGING",
    )
    base_url = f"http://{settings.web_host}:{settings.web_port}"
    print(f"dev: web on {base_url}, mail in {settings.mail_dir}")
    print(f"dev: dashboard on {base_url}/dashboard (sign in with the API token below)")
    print(f"dev: worker metrics on http://{settings.worker_metrics_host}:{metrics_port}/metrics")
    print(f"dev: API token {token}")
    print(f"dev: try  export TOKEN={token}")
    print(f'dev:      curl -H "Authorization: Bearer $TOKEN" {base_url}/events \\')
    print('dev:        -H \'Content-Type: application/json\' -d \'{"event": {"type": "hello"}}\'')
    manager.loop()
    sys.exit(manager.returncode)
