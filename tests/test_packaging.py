"""The package declares its packages and their data, so installing it is quiet.

web/static and web/templates hold no Python: setuptools must find them as (namespace) packages,
or it warns, file by file, that it ships them as data of a package absent from the `packages`
configuration (newer setuptools: "Package 'web.static' is absent from the `packages`
configuration"; older: "Installing 'web.static' as data is deprecated"). This runs setuptools'
own discovery and build_py over a copy of the project, off the network, in about a second.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SHIPPED = ["pyproject.toml", "README.md", "settings.py", "service", "jobs", "web"]
DATA_WARNINGS = ["absent from the `packages` configuration", "as data is deprecated"]


def test_building_finds_every_package_and_ships_the_dashboard_files(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in SHIPPED:  # a copy: the build leaves nothing in the working tree
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    built = tmp_path / "lib"
    commands = ["egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(built)]
    run = subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", *commands],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    for warning in DATA_WARNINGS:
        assert warning not in output, output
    assert (built / "web" / "static" / "dashboard.js").is_file()
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE"):
        assert (built / "web" / "static" / "vendor" / "uplot" / name).is_file(), name
    assert (built / "web" / "templates" / "overview.html").is_file()
    assert (built / "service" / "runtime" / "__init__.py").is_file()
