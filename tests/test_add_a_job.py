"""README "Add your own job", followed to the letter on a copy of this tree.

The module, the registry lines, the curl request and the Python snippet are taken from the
README itself, so the guide cannot drift from what works: the new job must pass the import
contracts, run on a real worker (`arq service.WorkerSettings`), be queued through a real
`python -m web` and from the snippet, and show on the status API, the dashboard and OpenAPI.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from subprocess import PIPE
from typing import Any

import aiohttp
import pytest
from arq.connections import ArqRedis

from settings import Settings
from tests.conftest import TEST_API_TOKEN, free_port
from tests.processes import ServiceProcess
from tests.test_worker_process import service_env
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
COPIED = ["service", "jobs", "web", "tools", "settings.py", "pyproject.toml"]


def guide() -> str:
    match = re.search(r"^## Add your own job\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, "README.md has no '## Add your own job' section"
    return match.group(1)


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", guide(), re.S)


def follow_step_2(registry: Path) -> None:
    """ "add ``hello`` to the import line and ``hello.JOB,`` to the list", as the README shows."""
    import_line, list_line = (block.strip("\n") for block in code_blocks("python")[1:3])
    text = registry.read_text()
    (current,) = [line for line in text.splitlines() if line.startswith("from jobs import ")]
    names = sorted({*current.removeprefix("from jobs import ").split(", "), "hello"})
    assert f"from jobs import {', '.join(names)}" == import_line, "the README's import line"
    text = text.replace(current, import_line)
    text = text.replace("\n    ]\n)", f"\n{list_line}\n    ]\n)")
    registry.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the project with the guide's steps 1 and 2 done."""
    copy = tmp_path / "app"
    copy.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, copy / name)
    module = code_blocks("python")[0]
    assert module.lstrip().startswith('"""The say_hello job')
    (copy / "jobs" / "hello.py").write_text(module)
    follow_step_2(copy / "jobs" / "registry.py")
    return copy


def run_in(tree: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """A command of this venv, run inside the copy, which its imports then come from."""
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=tree, capture_output=True, text=True, timeout=120
    )


def test_the_new_job_keeps_the_layering_rules(tree: Path) -> None:
    ruff = run_in(tree, "ruff", "check", "--no-cache", "jobs/hello.py", "jobs/registry.py")
    assert ruff.returncode == 0, ruff.stdout
    contracts = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert contracts.returncode == 0, contracts.stdout
    assert "Contracts: 5 kept, 0 broken." in contracts.stdout


@pytest.fixture
def processes(
    tree: Path, settings: Settings, redis: ArqRedis, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """Step 3: the worker and the web app of the copy, started as users start them."""
    port = free_port()
    env = service_env(settings, WEB_PORT=str(port), API_TOKENS=TEST_API_TOKEN)
    worker = ["-m", "arq", "service.WorkerSettings"]
    started = [
        ServiceProcess(worker, env, tmp_path / "worker.log", cwd=tree),
        ServiceProcess(["-m", "web"], env, tmp_path / "web.log", cwd=tree),
    ]
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        for process in started:
            process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {TEST_API_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


async def finished(http: aiohttp.ClientSession, url: str, task_id: str) -> dict[str, Any]:
    status: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal status
        async with http.get(f"{url}/task-status/{task_id}") as response:
            status = await response.json()
        return status.get("status") in {"SUCCESS", "FAILURE"}

    await wait_until(done, within=30)
    return status


async def test_the_guide_end_to_end(
    tree: Path, processes: tuple[str, dict[str, str]], http: aiohttp.ClientSession
) -> None:
    url, env = processes

    async def web_up() -> bool:
        try:
            async with http.get(f"{url}/health") as response:
                return bool((await response.json())["worker"]["alive"])
        except aiohttp.ClientError:
            return False

    await wait_until(web_up, within=30)

    # step 4, over HTTP: the README's curl request, sent as it is written
    (curl,) = code_blocks("sh")
    words = shlex.split(curl.split("\n#")[0].replace("\\\n", " "))
    assert words[words.index("-s") + 1] == "localhost:8080/jobs"
    body = json.loads(words[words.index("-d") + 1])
    async with http.post(f"{url}/jobs", json=body) as response:
        assert response.status == 202, await response.text()
        task_id = (await response.json())["task_id"]
    done = await finished(http, url, task_id)
    assert done["status"] == "SUCCESS", done
    assert done["result"] == {"greeting": "Hello, Ann!"}
    assert done["function"] == "say_hello"

    # step 4, from Python: the README's snippet, run beside the service
    snippet = code_blocks("python")[3]
    script = await asyncio.create_subprocess_exec(
        sys.executable, "-c", snippet, cwd=tree, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(script.communicate(), 60)
    assert script.returncode == 0, err.decode()
    from_python = await finished(http, url, out.decode().strip())
    assert from_python["result"] == {"greeting": "Hello, Bob!"}

    # step 5: the dashboard lists it, its page shows its progress, OpenAPI its kwargs
    async with http.get(f"{url}/dashboard") as response:
        overview = await response.text()
    assert task_id in overview
    assert "say_hello" in overview
    async with http.get(f"{url}/dashboard/jobs/{task_id}") as response:
        page = await response.text()
    assert 'data-fraction="1.0"' in page  # its progress: step 1 of 1
    assert '<span class="badge badge-success">SUCCESS</span></td>' in page  # its attempt
    async with http.get(f"{url}/openapi.json") as response:
        spec = await response.json()
    body_schema = spec["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert "say_hello" in body_schema["schema"]["discriminator"]["mapping"]
    assert "SayHello" in spec["components"]["schemas"]

    # a bad request is refused with the field's name, and queues nothing
    bad = {"function": "say_hello", "kwargs": {"name": "x\r\nBcc: y"}}
    async with http.post(f"{url}/jobs", json=bad) as response:
        assert response.status == 400
        assert "kwargs.name" in (await response.json())["error"]
