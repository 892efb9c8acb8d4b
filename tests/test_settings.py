"""Settings come from the environment, typed; a bad value stops start-up naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import Settings, SettingsError, load_settings

ENV_NAMES = [
    "REDIS_URL", "SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_STARTTLS",
    "SMTP_TLS", "MAIL_FROM", "WEB_HOST", "WEB_PORT", "DATA_DIR", "MAX_UPLOAD_BYTES",
    "CLEANUP_MAX_AGE_DAYS", "CRON_TIMEZONE", "WORKER_MAX_JOBS", "JOB_TIMEOUT", "IMAGE_THREADS",
    "REPORT_RECIPIENTS",
]  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.redis_url == "redis://localhost:6379/0"
    assert (settings.smtp_host, settings.smtp_port) == ("localhost", 1025)
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 8080)
    assert settings.data_dir == Path("./var")
    assert settings.uploads_dir == Path("var/uploads")
    assert settings.reports_dir == Path("var/reports")
    assert settings.mail_dir == Path("var/mail")
    assert settings.database_path == Path("var/app.db")
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.cleanup_max_age_days == 30
    assert settings.cron_timezone == "UTC"
    assert settings.report_recipients == ()
    assert settings.smtp_starttls is False
    assert settings.smtp_tls is False


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:secret@cache.internal:6380/2")
    monkeypatch.setenv("SMTP_PORT", "2525")
    monkeypatch.setenv("SMTP_STARTTLS", "true")
    monkeypatch.setenv("REPORT_RECIPIENTS", "ops@example.com, boss@example.com ,")
    monkeypatch.setenv("CRON_TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("WORKER_MAX_JOBS", "200")
    monkeypatch.setenv("DATA_DIR", "/srv/jobs")
    settings = load_settings()
    assert settings.smtp_port == 2525
    assert settings.smtp_starttls is True
    assert settings.report_recipients == ("ops@example.com", "boss@example.com")
    assert str(settings.timezone) == "Europe/Paris"
    assert settings.worker_max_jobs == 200
    assert settings.database_path == Path("/srv/jobs/app.db")
    redis = settings.redis_settings
    assert (redis.host, redis.port, redis.database, redis.password) == (
        "cache.internal",
        6380,
        2,
        "secret",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMTP_PORT", "not-a-port"),
        ("SMTP_PORT", "70000"),
        ("WEB_PORT", "0"),
        ("MAX_UPLOAD_BYTES", "-1"),
        ("CRON_TIMEZONE", "Mars/Olympus"),
        ("REPORT_RECIPIENTS", "ops@example.com,not-an-address"),
        ("REDIS_URL", "http://localhost:6379"),
        ("SMTP_TLS", "maybe"),
        ("WORKER_MAX_JOBS", "0"),
        ("MAIL_FROM", "nobody"),
        ("STORAGE_URL", "ftp://bucket/prefix"),
        ("STORAGE_URL", "s3://Not_A_Bucket/prefix"),
        ("STORAGE_URL", "s3://bucket/a/../b"),
        ("S3_ENDPOINT_URL", "minio.internal:9000"),
        ("WEBHOOK_ALLOWED_HOSTS", "hooks.internal:0"),
        ("WEBHOOK_ALLOWED_HOSTS", "hooks.internal,hooks.internal:https"),
        ("WEBHOOK_ALLOWED_HOSTS", "[fd00::7]8443"),
        ("WEBHOOK_HOST_CONCURRENCY", "-1"),
        ("EMAIL_RATE_LIMIT", "fast"),
        ("EMAIL_RATE_LIMIT", "10/second;"),
        ("EMAIL_RATE_LIMIT", "0/second"),
        ("EMAIL_RATE_LIMIT", "2000000/day"),
        ("WEBHOOK_HOST_RATE_LIMIT", "10/fortnight"),
        ("TRUSTED_PROXIES", "10.0.0.5,proxy.internal"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
    ],
)
def test_invalid_values_stop_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert name in str(raised.value)


def test_an_s3_storage_url_needs_both_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_URL", "s3://photos/jobservice")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE000000000")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(SettingsError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        load_settings()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-secret")
    settings = load_settings()
    assert settings.storage_url == "s3://photos/jobservice"
    assert "the-secret" not in repr(settings), "the secret stays out of logs and tracebacks"


def test_trusted_proxies_are_addresses_and_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().trusted_proxies == (), "none by default: no forwarded header believed"
    monkeypatch.setenv("TRUSTED_PROXIES", " 10.0.0.5, 10.1.2.3/16 ,::1,")
    assert load_settings().trusted_proxies == ("10.0.0.5/32", "10.1.0.0/16", "::1/128")


def test_starttls_and_tls_are_exclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_STARTTLS", "1")
    monkeypatch.setenv("SMTP_TLS", "1")
    with pytest.raises(SettingsError, match="SMTP_STARTTLS and SMTP_TLS"):
        load_settings()


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.smtp_port = 1  # type: ignore[misc]
