"""The custom import-linter contract behind `make lint`'s "arq's internals only through
service.engine.arq_api" (tools/import_contracts.py), on a package made to break it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import arq
import pytest

from tools.import_contracts import imported_modules

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("line", "modules"),
    [
        ("from arq.worker import Worker", {"arq.worker"}),
        ("from arq.connections import ArqRedis, RedisSettings", {"arq.connections"}),
        ("from arq import Retry, cron", {"arq"}),  # cron: the function arq re-exports
        ("from arq import worker", {"arq", "arq.worker"}),  # worker: a module
        ("from arq import (", {"arq"}),
        ("import arq.constants", {"arq.constants"}),
        ("import arq.jobs as jobs, arq", {"arq.jobs", "arq"}),
        ("from arqlike import x", set()),
    ],
)
def test_the_modules_an_import_line_takes(line: str, modules: set[str]) -> None:
    assert imported_modules(line, arq) == modules


def _lint(folder: Path) -> subprocess.CompletedProcess[str]:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [lint_imports, "--no-cache"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_module_reaching_past_the_adapter_breaks_the_contract(tmp_path: Path) -> None:
    package = tmp_path / "app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "adapter.py").write_text("from arq.worker import Worker\n")
    (package / "public.py").write_text(
        "from arq import Retry\nfrom arq.connections import ArqRedis\n"
    )
    (package / "sneaky.py").write_text("import os\n\nfrom arq.constants import job_key_prefix\n")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\n"
        "root_package = app\n"
        "include_external_packages = True\n"
        "contract_types =\n    internal_api: tools.import_contracts.InternalApiContract\n"
        "[importlinter:contract:arq]\n"
        "name = arq through the adapter\n"
        "type = internal_api\n"
        "package = arq\n"
        "public_modules =\n    arq\n    arq.connections\n"
        "allowed_importers =\n    app.adapter\n"
    )
    broken = _lint(tmp_path)
    assert broken.returncode != 0, broken.stdout
    assert "app.sneaky:3 imports arq.constants, which only app.adapter may use" in broken.stdout
    assert "app.public" not in broken.stdout.split("Broken contracts")[-1]

    (package / "sneaky.py").write_text("from app.adapter import Worker\n")
    kept = _lint(tmp_path)
    assert kept.returncode == 0, kept.stdout
    assert "arq through the adapter KEPT" in kept.stdout
