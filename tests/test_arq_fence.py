"""The engine's fence around arq: service/engine/arq_api.py names every arq internal the
engine uses and checks each at import; the loop uses no arq Worker name it does not list."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from arq.worker import Worker

from service.engine import arq_api

ROOT = Path(__file__).resolve().parent.parent
LOOP = ROOT / "service" / "engine" / "loop.py"


def _arq_worker_names() -> set[str]:
    """Every name arq's Worker has: class attributes and methods, and what __init__ sets."""
    return set(dir(Worker)) | set(Worker.__init__.__code__.co_names)


def _names_the_loop_uses() -> dict[str, int]:
    """Attribute names the loop reads or writes on a worker (``self.x``, ``worker.x``,
    ``super().x``) and the methods it defines, with a line where each appears."""
    tree = ast.parse(LOOP.read_text())
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            on_worker = isinstance(owner, ast.Name) and owner.id in {"self", "worker"}
            on_super = (
                isinstance(owner, ast.Call)
                and isinstance(owner.func, ast.Name)
                and owner.func.id == "super"
            )
            if on_worker or on_super:
                found.setdefault(node.attr, node.lineno)
        elif isinstance(node, ast.ClassDef) and node.name == "BatchWorker":
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    found.setdefault(item.name, item.lineno)
    return found


def test_the_loop_uses_no_arq_worker_name_the_adapter_does_not_list() -> None:
    listed = (
        set(arq_api.OVERRIDDEN_METHODS)
        | set(arq_api.CALLED_METHODS)
        | arq_api.WORKER_ATTRIBUTES
        | arq_api.WORKER_PROPERTIES
    )
    arq_names = _arq_worker_names()
    used = _names_the_loop_uses()
    unlisted = {name: line for name, line in used.items() if name in arq_names - listed}
    assert unlisted == {}, "arq Worker names the loop uses (line) that arq_api.py must list"
    assert {"_poll_iteration", "handle_sig", "finish_job", "tasks", "_pool"} <= set(used)


def test_every_override_the_loop_defines_is_listed_as_one() -> None:
    tree = ast.parse(LOOP.read_text())
    (batch,) = [
        n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "BatchWorker"
    ]
    defined = {
        item.name for item in batch.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    overrides = defined & set(dir(Worker))
    assert overrides == set(arq_api.OVERRIDDEN_METHODS)


def _import_after(patch: str) -> subprocess.CompletedProcess[str]:
    """Import the adapter in a fresh interpreter after ``patch`` changed arq in memory."""
    code = f"import arq, arq.worker, arq.version\n{patch}\nimport service.engine.arq_api\n"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ("arq.version.VERSION = '0.28.1'", "built and tested against 0.28.0 only"),
        ("del arq.worker.Worker.heart_beat", "Worker.heart_beat() is gone"),
        (
            "async def finish_job(self, job_id, finish, result_data): pass\n"
            "arq.worker.Worker.finish_job = finish_job",
            "Worker.finish_job now takes",
        ),
        (
            "async def main(self): pass\narq.worker.Worker.main = main",
            "Worker.main() no longer calls _poll_iteration()",
        ),
        (
            "def __init__(self, *args, **kwargs): self.tasks = {}\n"
            "arq.worker.Worker.__init__ = __init__",
            "Worker.__init__ no longer sets",
        ),
        ("del arq.worker.Worker.pool", "Worker.pool is no longer a property"),
        ("import arq.constants\ndel arq.constants.abort_jobs_ss", "has no abort_jobs_ss"),
        (
            "import arq.jobs\nf = arq.jobs.serialize_result\n"
            "arq.jobs.serialize_result = lambda *a, **k: f(*a, **k).replace(b'\"ft\"', b'\"fx\"')",
            "a serialized result has the keys",
        ),
    ],
)
def test_a_changed_arq_fails_at_import_naming_what_changed(patch: str, named: str) -> None:
    result = _import_after(patch)
    assert result.returncode != 0
    assert "ArqChanged" in result.stderr
    assert named in result.stderr
    assert "service/engine/arq_api.py" in result.stderr


def test_the_installed_arq_passes_every_check() -> None:
    result = _import_after("")
    assert result.returncode == 0, result.stderr
