"""One typed settings object, read from environment variables once at process start.

Nothing else in the project reads ``os.environ``: the web app, the worker and the dev runner
all call :func:`load_settings` and pass the result down explicitly.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, fields
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from arq.connections import RedisSettings
from email_validator import EmailNotValidError, validate_email
from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024
MIN_TOKEN_LENGTH = 16  # short tokens can be guessed; secrets.token_urlsafe() gives 43
POSTGRES_SCHEMES = ("postgresql://", "postgres://")  # asyncpg takes both
SIGNING_SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks key prefix, not a key)
MAX_SIGNING_SECRETS = 2
# sends one rate-limit window may allow: Redis keeps about 100 bytes per send it counts
MAX_RATE_PER_WINDOW = 100_000
# a queue's name, as service.engine.queues checks it (settings imports nothing of service/)
QUEUE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
PRIORITY_NAMES = ("high", "normal", "low")


@dataclass
class ServiceRedisSettings(RedisSettings):
    """arq's RedisSettings plus what they cannot say: the sentinels' own password.

    With REDIS_SENTINELS set, ``sentinel`` is on and ``host`` lists the sentinels, as arq's own
    ``create_pool`` reads them (``arq service.WorkerSettings --check`` does).
    """

    sentinel_password: str | None = None


class SettingsError(SystemExit):
    """Raised at start-up when an environment variable holds an invalid value."""


class Settings(BaseSettings):
    """Every knob of the service; field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    redis_url: str = "redis://localhost:6379/0"
    # rediss:// only: the CA that signed Redis's certificate (default: the system's), and a
    # client certificate + key when Redis requires one (its tls-auth-clients default)
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    # Sentinel: the master is whichever server these sentinels name REDIS_SENTINEL_MASTER;
    # REDIS_URL then gives only the database, the login and TLS (README "Reliability")
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = ()
    redis_sentinel_master: str | None = None
    redis_sentinel_password: str | None = None
    # an enqueue is answered 202 only once WAIT says this many replicas hold it
    redis_min_replicas_ack: int = Field(0, ge=0)
    redis_replica_ack_timeout: int = Field(1000, ge=1)  # ms; WAIT's 0 would wait forever
    # start-up checks (service.store.redis_checks): eviction drops queued jobs, so it stops
    # the start unless allowed; a Redis that saves nothing is only worth a warning, and none
    # where it saves nothing on purpose
    redis_allow_eviction: bool = False
    redis_ephemeral: bool = False
    queue_name: str = "arq:queue"

    smtp_host: str = "localhost"
    smtp_port: int = Field(1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    # SMTP_USERNAME's password in clear over a connection without TLS (jobs/mail/smtp_login.py)
    smtp_allow_plaintext_auth: bool = False
    smtp_timeout: float = Field(10.0, gt=0)
    # idle connections kept for reuse (None: WORKER_MAX_JOBS, one per email sent at once);
    # 0: a new connection per email
    smtp_pool_size: int | None = Field(None, ge=0)
    mail_from: str = "Job Service <jobs@example.com>"

    web_host: str = "127.0.0.1"
    web_port: int = Field(8080, ge=1, le=65535)
    # one event loop uses one core: more processes (under gunicorn) serve more requests
    web_processes: int = Field(1, ge=1, le=64)
    # a request's head must arrive within this many seconds of its connection opening, and a
    # body within REQUEST_BODY_TIMEOUT of its head; an upload may take longer: MAX_UPLOAD_BYTES
    # at UPLOAD_MIN_BYTES_PER_SECOND (slow clients cannot hold connections and temp files open)
    request_header_timeout: float = Field(10, gt=0)
    request_body_timeout: float = Field(30, gt=0)
    upload_min_bytes_per_second: int = Field(64 * 1024, gt=0)

    data_dir: Path = Path("./var")
    # the users database: None means sqlite:///DATA_DIR/app.db (README "Choosing the database")
    database_url: str | None = None
    database_pool_size: int = Field(10, ge=1, le=1000)  # PostgreSQL connections per process
    database_timeout: float = Field(5, gt=0)
    max_upload_bytes: int = Field(10 * MiB, gt=0)
    # decoding costs memory per pixel (3-4 bytes each), whatever the file's size
    max_image_pixels: int = Field(50_000_000, gt=0)
    cleanup_max_age_days: float = Field(30, gt=0)
    cron_timezone: str = "UTC"
    # a schedule whose time passed while no worker was up runs once when a worker starts
    # within this many seconds of it (0: never, as arq's cron does); service/worker/schedules.py
    cron_catch_up: int = Field(3600, ge=0, le=7 * 86_400)
    # Files (uploads, thumbnails, reports): unset, folders under DATA_DIR; s3://bucket/prefix,
    # an S3-compatible bucket (service/store/storage/). The keys are the standard AWS variables.
    storage_url: str | None = None
    s3_endpoint_url: str | None = None  # R2, Garage, MinIO...: path-style addressing
    s3_region: str = "us-east-1"
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    report_recipients: Annotated[tuple[str, ...], NoDecode] = ()
    # POST /reports/daily takes days from this many days ago up to today (CRON_TIMEZONE)
    report_max_age_days: int = Field(400, ge=0, le=36_500)

    worker_max_jobs: int = Field(50, ge=1)
    # the named queues this worker takes jobs from (empty: every declared queue); a name no
    # job declares stops the worker at start (service.worker.options)
    worker_queues: Annotated[tuple[str, ...], NoDecode] = ()
    # a job due this many seconds longer than another counts one priority level higher
    # (service.engine.queues): no low-priority job starves under steady high-priority load
    priority_ageing_seconds: float = Field(30, gt=0, le=86_400)
    job_timeout: float = Field(300, gt=0)
    job_max_tries: int = Field(5, ge=1)
    job_result_ttl: int = Field(86_400, ge=1)
    retry_backoff_base: float = Field(2.0, gt=0)
    retry_backoff_max: float = Field(300.0, gt=0)
    image_threads: int = Field(2, ge=1)
    webhook_timeout: float = Field(10.0, gt=0)
    # hosts (names or IP addresses) webhooks may reach even when they are not public
    webhook_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    # worker slots the webhooks to one host may hold at once (0: no cap), so a target that
    # never answers holds 5 of WORKER_MAX_JOBS' 50, not all of them (jobs.webhooks)
    webhook_host_concurrency: int = Field(5, ge=0)
    # circuit breakers per destination (each webhook host, the SMTP server), shared by all
    # workers through Redis (service.worker.breakers): consecutive transient failures that open
    # one (0: no breakers at all), the first wait before a probe, and the longest a doubled
    # wait may grow to; at most breaker_max_destinations are tracked at once
    breaker_failures: int = Field(5, ge=0, le=1000)
    breaker_cooldown: float = Field(30.0, gt=0, le=86_400)
    breaker_cooldown_max: float = Field(600.0, gt=0, le=86_400)
    breaker_max_destinations: int = Field(1000, ge=1, le=100_000)
    # sends shared by every worker (service.worker.rate_gate): all emails together, and the
    # webhooks to each host on their own; "10/second;50000/day", empty: no limit
    email_rate_limit: str = ""
    webhook_host_rate_limit: str = ""
    # largest request body (bytes) that queues a webhook / an event, by its route or POST /jobs;
    # the job holds it in Redis until it has run: 413 beyond
    webhook_max_payload_bytes: int = Field(64 * 1024, ge=1024, le=64 * MiB)
    # Standard Webhooks signing keys (whsec_<base64>); two during a rotation, each delivery
    # signed with both. Unset: webhooks go unsigned (jobs/webhook_signing.py)
    webhook_signing_secret: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    event_max_payload_bytes: int = Field(16 * 1024, ge=1024, le=64 * MiB)
    idempotency_ttl: int = Field(86_400, ge=1)
    dead_letter_max_jobs: int = Field(10_000, ge=1)
    dead_letter_max_age: int = Field(7 * 86_400, ge=1)
    # what a failed job's entry keeps of its arguments (failed-jobs list): larger ones are
    # cut to this size, and such a failed job cannot be retried (service/records/arguments.py)
    dead_letter_max_argument_bytes: int = Field(4096, ge=256, le=MiB)
    # what a finished replayable job (deliver_webhook) keeps of its arguments so that POST
    # /jobs/{id}/replay can send it again; larger ones are not kept (no replay); 0: none kept
    replay_max_argument_bytes: int = Field(16 * 1024, ge=0, le=64 * MiB)
    # job search (GET /jobs): each of its indexes (all jobs, per function, per business key)
    # keeps at most this many jobs, the newest; by time, as long as results or failed jobs last
    search_index_max_jobs: int = Field(100_000, ge=100, le=10_000_000)
    # a bulk action (POST /jobs/bulk, the search page's buttons) acts on at most this many jobs
    bulk_max_jobs: int = Field(500, ge=1, le=10_000)
    job_history_max: int = Field(50, ge=1)
    email_job_timeout: float = Field(60, gt=0)
    webhook_job_timeout: float = Field(30, gt=0)
    image_job_timeout: float = Field(120, gt=0)
    job_lock_margin: float = Field(10, gt=0)
    worker_shutdown_grace: int = Field(25, ge=0)
    redis_retry_seconds: float = Field(30, ge=0)
    redis_socket_timeout: float = Field(5, gt=0)
    # connections each web process opens to Redis at most (live streams share one of them)
    web_redis_max_connections: int = Field(100, ge=2)

    # Bearer tokens the API accepts; empty means every protected route refuses (see web/auth.py)
    api_tokens: Annotated[tuple[str, ...], NoDecode] = ()
    # "N/second|minute|hour|day", several joined by ";"; empty switches the limit off
    rate_limit_per_token: str = "6000/minute"  # noqa: S105 (a rate, not a secret)
    rate_limit_per_recipient: str = "10/hour;50/day"
    # Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto/-Host are believed
    # (web/proxies.py); from any other peer those headers change nothing
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    # bytes of request bodies that queue jobs one token may send per window (sliding), what its
    # jobs hold in Redis: 429 beyond; 0 switches the quota off
    payload_quota_per_token: int = Field(64 * MiB, ge=0)
    payload_quota_window: int = Field(3600, ge=1)  # seconds
    # Dashboard: how long a sign-in lasts; whether to show the dev mail sink's messages
    dashboard_session_hours: float = Field(12, gt=0)
    dashboard_mail_page: bool = False
    # live-update streams (SSE): open at once per token and per web process, and how long one
    # stays open without an event before it is closed (the browser reconnects)
    live_streams_per_token: int = Field(100, ge=1)
    live_streams_per_process: int = Field(1000, ge=1)
    live_stream_idle_seconds: float = Field(300, gt=0)

    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # a job attempt's job_start line is written once it has run this long (0: at its start);
    # its job_end line says everything else, so a quick job costs one line, not two
    log_job_start_after: float = Field(1.0, ge=0)
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(0, ge=0, le=65535)  # 0: the worker serves no /metrics

    @field_validator(
        "report_recipients",
        "api_tokens",
        "webhook_allowed_hosts",
        "redis_sentinels",
        "trusted_proxies",
        "webhook_signing_secret",
        "worker_queues",
        mode="before",
    )
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("worker_queues")
    @classmethod
    def _check_worker_queues(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each a queue's name (service.engine.queues.check_queue_name's rule), once."""
        for name in value:
            if not QUEUE_NAME.fullmatch(name) or name in PRIORITY_NAMES:
                raise ValueError(
                    f"{name!r} is not a queue name (lower-case letters, digits and _, "
                    "starting with a letter)"
                )
        return tuple(dict.fromkeys(value))

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            _host_and_port(address)
        return value

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            _allowed_host_port(entry)
        return value

    @field_validator("report_recipients")
    @classmethod
    def _check_recipients(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each address checked; one listed twice (in any case) is mailed once."""
        kept: dict[str, str] = {}
        for address in value:
            valid = _valid_address(address)
            kept.setdefault(valid.lower(), valid)
        return tuple(kept.values())

    @field_validator("api_tokens")
    @classmethod
    def _check_api_tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for token in value:
            if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
                raise ValueError(
                    f"each token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters"
                    " (make one: python -c 'import secrets; print(secrets.token_urlsafe())')"
                )
        return value

    @field_validator("webhook_signing_secret")
    @classmethod
    def _check_signing_secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        """Each a Standard Webhooks key; the message never quotes one."""
        if len(value) > MAX_SIGNING_SECRETS:
            raise ValueError("at most two secrets: the new one and the one being retired")
        for position, secret in enumerate(value, start=1):
            if (why := _signing_secret_refusal(secret.get_secret_value())) is not None:
                raise ValueError(f"secret {position} of {len(value)}: {why}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        networks = []
        for entry in value:
            try:
                networks.append(str(ip_network(entry, strict=False)))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)"
                ) from None
        return tuple(networks)

    @field_validator("rate_limit_per_token", "rate_limit_per_recipient")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        if value.strip():
            try:
                parse_many(value)
            except ValueError as exc:
                raise ValueError(f"not a rate limit like '100/minute;1000/hour' ({exc})") from None
        return value

    @field_validator("email_rate_limit", "webhook_host_rate_limit")
    @classmethod
    def _check_send_rate(cls, value: str) -> str:
        """Several windows (``;``), each at least one send and at most MAX_RATE_PER_WINDOW:
        Redis keeps one entry per send a window allows (service.records.rate_limits)."""
        if not value.strip():
            return ""
        try:
            windows = parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '10/second;50000/day' ({exc})") from None
        for window in windows:
            if not 1 <= window.amount <= MAX_RATE_PER_WINDOW:
                raise ValueError(
                    f"{window.amount} per {window.get_expiry()} s: each window allows from 1 to "
                    f"{MAX_RATE_PER_WINDOW:,} sends"
                )
        return value.strip()

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("mail_from")
    @classmethod
    def _check_mail_from(cls, value: str) -> str:
        if any(char in value for char in "\r\n"):
            raise ValueError("must not contain line breaks")
        address = value.rsplit("<", 1)[-1].rstrip(">").strip()
        _valid_address(address)
        return value

    @field_validator("cron_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        bucket_and_prefix(value)  # raises ValueError naming what is wrong
        return value.strip()

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value or None

    @model_validator(mode="after")
    def _s3_needs_keys(self) -> Settings:
        """Only explicit keys: botocore's other sources (profiles, instance roles) read files
        and call the metadata address from the event loop, and few S3-compatible servers
        have them."""
        if self.storage_url and not (self.aws_access_key_id and self.aws_secret_access_key):
            raise ValueError(
                "STORAGE_URL is an s3:// bucket: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        return self

    @field_validator("database_url", mode="before")
    @classmethod
    def _check_database_url(cls, value: object) -> object:
        """The URL itself is never quoted back: it may hold a password."""
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None  # DATABASE_URL= (empty) means the default, as unset does
        if value.startswith("sqlite:"):
            if not value.startswith("sqlite:///") or value.rstrip("/") == "sqlite:":
                raise ValueError(
                    "a SQLite URL names a file: sqlite:///var/app.db (relative)"
                    " or sqlite:////srv/jobs/app.db (absolute)"
                )
            return value
        if value.startswith(POSTGRES_SCHEMES):
            parts = urlsplit(value)
            try:
                parts.port  # noqa: B018 (raises on a port that is not a number)
            except ValueError:
                raise ValueError("the port must be a number from 1 to 65535") from None
            if not parts.hostname and "host" not in dict(parse_qsl(parts.query)):
                raise ValueError("a PostgreSQL URL needs a host: postgresql://user@host/dbname")
            return value
        raise ValueError(
            "must be sqlite:///path/to/app.db or postgresql://user:password@host:port/dbname"
        )

    @model_validator(mode="after")
    def _breaker_cap_above_cooldown(self) -> Settings:
        if self.breaker_cooldown_max < self.breaker_cooldown:
            raise ValueError("BREAKER_COOLDOWN_MAX must be at least BREAKER_COOLDOWN")
        return self

    @model_validator(mode="after")
    def _one_tls_mode(self) -> Settings:
        if self.smtp_starttls and self.smtp_tls:
            raise ValueError("SMTP_STARTTLS and SMTP_TLS are exclusive: pick one")
        return self

    @model_validator(mode="after")
    def _job_timeouts_outlast_their_requests(self) -> Settings:
        """A job cut before its own SMTP or HTTP timeout could never report that timeout."""
        if self.email_job_timeout <= self.smtp_timeout:
            raise ValueError("EMAIL_JOB_TIMEOUT must be longer than SMTP_TIMEOUT")
        if self.webhook_job_timeout <= self.webhook_timeout:
            raise ValueError("WEBHOOK_JOB_TIMEOUT must be longer than WEBHOOK_TIMEOUT")
        return self

    @model_validator(mode="after")
    def _sentinels_name_a_master(self) -> Settings:
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise ValueError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together: set both")
        if self.redis_sentinels and self.redis_url.startswith("unix://"):
            raise ValueError("REDIS_SENTINELS name TCP servers: REDIS_URL cannot be unix://")
        return self

    @model_validator(mode="after")
    def _replica_ack_within_the_socket_timeout(self) -> Settings:
        """A WAIT cut by the web's own socket timeout would be reported as Redis being down."""
        if self.redis_min_replicas_ack and (
            self.redis_replica_ack_timeout >= self.redis_socket_timeout * 1000
        ):
            raise ValueError("REDIS_REPLICA_ACK_TIMEOUT (ms) must be below REDIS_SOCKET_TIMEOUT")
        return self

    @model_validator(mode="after")
    def _quota_holds_one_payload(self) -> Settings:
        """A quota smaller than one accepted body would refuse that body forever."""
        largest = max(self.webhook_max_payload_bytes, self.event_max_payload_bytes)
        if self.payload_quota_per_token and self.payload_quota_per_token < largest:
            raise ValueError(
                "PAYLOAD_QUOTA_PER_TOKEN must be 0 (off) or at least the largest payload limit"
                f" ({largest} bytes: WEBHOOK_MAX_PAYLOAD_BYTES, EVENT_MAX_PAYLOAD_BYTES)"
            )
        return self

    @property
    def smtp_connections_kept(self) -> int:
        """SMTP_POOL_SIZE, or else as many connections as emails the worker sends at once."""
        return self.worker_max_jobs if self.smtp_pool_size is None else self.smtp_pool_size

    @property
    def upload_body_timeout(self) -> float:
        """Seconds an upload's body may take: MAX_UPLOAD_BYTES at the minimum rate, never less
        than REQUEST_BODY_TIMEOUT."""
        return max(
            self.request_body_timeout, self.max_upload_bytes / self.upload_min_bytes_per_second
        )

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def database_backend(self) -> Literal["sqlite", "postgresql"]:
        return "postgresql" if (self.database_url or "").startswith(POSTGRES_SCHEMES) else "sqlite"

    @property
    def database_path(self) -> Path:
        """The SQLite file: DATABASE_URL's path, or DATA_DIR/app.db when it is unset."""
        if self.database_url and self.database_backend == "sqlite":
            return Path(unquote(self.database_url.removeprefix("sqlite:///")))
        return self.data_dir / "app.db"

    @property
    def database_url_shown(self) -> str:
        """DATABASE_URL as messages may show it: any password replaced by ``***``."""
        if self.database_backend == "sqlite":
            return self.database_url or f"sqlite:///{self.database_path.as_posix()}"
        return _without_password(self.database_url or "")

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.cron_timezone)

    @property
    def redis_settings(self) -> ServiceRedisSettings:
        """arq's connection settings; a short connect timeout keeps the web app answering.

        With REDIS_SENTINELS, the sentinels and the master's name replace REDIS_URL's host
        and port, which are then not used.
        """
        url = RedisSettings.from_dsn(self.redis_url)
        redis = ServiceRedisSettings(**{f.name: getattr(url, f.name) for f in fields(url)})
        if self.redis_sentinels:
            redis.sentinel = True
            redis.host = [_host_and_port(address) for address in self.redis_sentinels]
            redis.sentinel_master = str(self.redis_sentinel_master)
            redis.sentinel_password = self.redis_sentinel_password
        # arq keeps the URL's %-escapes: a password "p@ss" is written "p%40ss" in the URL
        redis.username = unquote(redis.username) if redis.username else None
        redis.password = unquote(redis.password) if redis.password else None
        if redis.ssl:
            redis.ssl_check_hostname = True  # arq's default (False) trusts any valid certificate
            redis.ssl_ca_certs = _path_or_none(self.redis_tls_ca_file)
            redis.ssl_certfile = _path_or_none(self.redis_tls_cert_file)
            redis.ssl_keyfile = _path_or_none(self.redis_tls_key_file)
        redis.conn_timeout = 2
        redis.conn_retries = 5
        redis.retry_on_timeout = True
        return redis


def _signing_secret_refusal(secret: str) -> str | None:
    """Why ``secret`` is not a Standard Webhooks key (whsec_ + base64 of 24-64 random
    bytes), or None. The library itself would take almost anything (its base64 decoding skips
    stray characters), so a typo would sign with a key the receiver does not hold."""
    if not secret.startswith(SIGNING_SECRET_PREFIX):
        return f"must start with {SIGNING_SECRET_PREFIX} (the Standard Webhooks format)"
    try:
        key = base64.b64decode(secret.removeprefix(SIGNING_SECRET_PREFIX), validate=True)
    except binascii.Error:
        return f"what follows {SIGNING_SECRET_PREFIX} must be base64"
    if not 24 <= len(key) <= 64:
        return (
            f"the key must be 24 to 64 bytes, this one is {len(key)} (make one: python -c"
            ' \'import base64, secrets; print("whsec_" + base64.b64encode('
            "secrets.token_bytes(32)).decode())')"
        )
    return None


def _host_and_port(address: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 address in brackets: ``[::1]:26379``) as a pair."""
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def _allowed_host_port(entry: str) -> None:
    """A WEBHOOK_ALLOWED_HOSTS entry's port, if it names one, is 1-65535: ``name:8443``,
    ``[v6]:8443`` (a bare IPv6 address has none); jobs/webhook_guard.py reads them."""
    port: str | None = None
    if entry.startswith("["):
        _, bracket, rest = entry.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r} is not [IPv6 address] or [IPv6 address]:port")
        port = rest[1:] if rest else None
    elif entry.count(":") == 1:
        port = entry.partition(":")[2]
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{entry!r}: a port must be a number from 1 to 65535")


def bucket_and_prefix(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")`` (prefix "" for none)."""
    scheme, _, rest = url.strip().partition("://")
    if scheme != "s3":
        raise ValueError("must be s3://bucket or s3://bucket/prefix (unset: folders in DATA_DIR)")
    bucket, _, prefix = rest.partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ValueError(f"{bucket!r} is not a bucket name (3-63 of a-z, 0-9, '.', '-')")
    prefix = prefix.strip("/")
    if any(part in {"", ".", ".."} for part in prefix.split("/")) and prefix:
        raise ValueError(f"the prefix {prefix!r} has an empty, '.' or '..' part")
    return bucket, prefix


def _without_password(url: str) -> str:
    """``postgresql://app:s3cret@db/app?password=x`` -> ``postgresql://app:***@db/app?password=***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = [
        (key, "***" if key == "password" else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return parts._replace(netloc=netloc, query=urlencode(query, safe="*")).geturl()


def _path_or_none(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _valid_address(address: str) -> str:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{address!r} is not a valid email address: {exc}") from None


def load_settings() -> Settings:
    """Read the environment; exit with a message naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper() or "settings"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
