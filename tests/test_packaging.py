"""The package declares its packages and their data, so installing it is quiet.

web/static and web/templates hold no Python: setuptools must find them as (namespace) packages,
or it warns, file by file, that it ships them as data of a package absent from the `packages`
configuration (newer setuptools: "Package 'web.static' is absent from the `packages`
configuration"; older: "Installing 'web.static' as data is deprecated"). This runs setuptools'
own discovery and build_py over a copy of the project, off the network, in about a second.

`make install` installs the project editable: with the packages' directory left unsaid,
setuptools serves them through a meta path finder and says so on every install, a boxed
"Editable installation ... may take precedence during imports" notice that pip shows.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
SHIPPED = ["pyproject.toml", "README.md", "settings.py", "service", "jobs", "web"]
DATA_WARNINGS = ["absent from the `packages` configuration", "as data is deprecated"]


def _copy(tmp_path: Path) -> Path:
    """The files a build reads, copied: a build leaves nothing in the working tree."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SHIPPED:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    return source


def _python(source: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run this Python in ``source`` (a copy of the project), which must succeed."""
    run = subprocess.run(
        [sys.executable, *argv],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_building_finds_every_package_and_ships_the_dashboard_files(tmp_path: Path) -> None:
    source = _copy(tmp_path)
    built = tmp_path / "lib"
    commands = ["egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(built)]
    run = _python(source, "-c", "import setuptools; setuptools.setup()", *commands)
    output = run.stdout + run.stderr
    for warning in DATA_WARNINGS:
        assert warning not in output, output
    assert (built / "web" / "static" / "dashboard.js").is_file()
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE"):
        assert (built / "web" / "static" / "vendor" / "uplot" / name).is_file(), name
    assert (built / "web" / "templates" / "overview.html").is_file()
    assert (built / "service" / "runtime" / "__init__.py").is_file()


def test_an_editable_install_is_built_without_a_notice(tmp_path: Path) -> None:
    """PEP 660's build_editable, the hook pip calls for `pip install -e .` (`make install`)."""
    source = _copy(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    hook = f"from setuptools import build_meta; print(build_meta.build_editable({str(wheels)!r}))"
    run = _python(source, "-W", "default", "-c", hook)
    output = run.stdout + run.stderr
    for notice in ("Editable installation", "may take precedence", "Warning:"):
        assert notice not in output, output
    with zipfile.ZipFile(wheels / run.stdout.strip().splitlines()[-1]) as wheel:
        pth = [name for name in wheel.namelist() if name.endswith(".pth")]
        assert [wheel.read(name).decode().strip() for name in pth] == [str(source)]
