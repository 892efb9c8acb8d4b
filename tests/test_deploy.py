"""deploy/: the reference deployment's environment files and systemd units stay true.

Every variable they set must be one settings.py reads, and the example values must pass its
checks together (common.env with web.env, and with worker.env); every unit must read
environment files that exist here and start an entry point the Makefile also starts.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KNOWN = {name.upper() for name in Settings.model_fields}


def env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines, as systemd's EnvironmentFile reads them (no quotes used here)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not KEY=VALUE"
        values[key.strip()] = value.strip()
    return values


def unit(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every line; systemd allows a key more than once."""
    found, section = [], ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if match := re.fullmatch(r"\[(\w+)\]", line):
            section = match.group(1)
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


ENV_FILES = sorted((DEPLOY / "env").glob("*.env"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def test_the_reference_deployment_has_its_files() -> None:
    assert [p.name for p in ENV_FILES] == ["common.env", "web.env", "worker.env"]
    assert [p.name for p in UNITS] == ["jobservice-web.service", "jobservice-worker@.service"]


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_every_variable_set_is_a_setting(path: Path) -> None:
    unknown = sorted(set(env_file(path)) - KNOWN)
    assert unknown == [], f"{path.name} sets variables settings.py does not read"


@pytest.mark.parametrize("role", ["web", "worker"])
def test_the_example_values_pass_the_settings_checks(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in KNOWN:
        monkeypatch.delenv(name, raising=False)
    values = {**env_file(DEPLOY / "env" / "common.env"), **env_file(DEPLOY / "env" / f"{role}.env")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # a SettingsError here names the variable to fix
    assert settings.redis_sentinels
    assert settings.database_url is not None
    assert settings.database_url.startswith("postgresql://")
    assert settings.storage_url is not None
    assert settings.storage_url.startswith("s3://")


def _make_command(target: str) -> list[str]:
    """The command a Makefile target runs, without the venv's path."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}: install\n\t(.+)$", makefile, re.M)
    assert match, f"no `{target}` target in the Makefile"
    return [word.replace("$(BIN)/", "") for word in shlex.split(match.group(1))]


@pytest.mark.parametrize(("path", "target"), list(zip(UNITS, ["web", "worker"], strict=True)))
def test_each_unit_reads_our_env_files_and_starts_what_make_starts(path: Path, target: str) -> None:
    lines = unit(path)
    service = {(key, value) for section, key, value in lines if section == "Service"}
    env_files = [value for key, value in service if key == "EnvironmentFile"]
    assert env_files, f"{path.name} reads no environment file"
    for env in env_files:
        assert (DEPLOY / "env" / Path(env).name).exists(), (
            f"{path.name}: {env} is not in deploy/env"
        )
    for key, value in service:
        if key == "Environment":
            name = value.partition("=")[0]
            assert name in KNOWN, f"{path.name} sets {name}, which settings.py does not read"
    (exec_start,) = [value for key, value in service if key == "ExecStart"]
    command = [
        Path(word).name if word.startswith("/") else word for word in shlex.split(exec_start)
    ]
    wanted = _make_command(target)
    assert command[-len(wanted) + 1 :] == wanted[1:], (
        f"{path.name} does not start `make {target}`'s command"
    )
    assert any(section == "Install" for section, _, _ in lines)
