"""The README stays true: every setting and every route is documented there.

Settings are read from the `Settings` model and routes from the app's own router, so a setting or
a route added later without a word in the README fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from settings import Settings
from web import create_app

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The text under the level-2 heading ``title``, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def _unnamed(path: str) -> str:
    """``/jobs/{job_id}/events`` and ``/jobs/{task_id}/events`` name the same route."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _path(resource: web.AbstractResource) -> str:
    """A static folder's route is written ``/prefix/{file}``."""
    if isinstance(resource, web.StaticResource):
        return resource.canonical.rstrip("/") + "/{file}"
    return resource.canonical


def test_every_setting_has_a_row_in_the_settings_table() -> None:
    table = _section("Settings")
    # the first column of each table row: `A` or `A` / `B`
    documented = {
        name
        for row in table.splitlines()
        if row.startswith("|")
        for name in re.findall(r"`([A-Z0-9_]+)`", row.split("|")[1])
    }
    expected = {name.upper() for name in Settings.model_fields}
    assert len(expected) > 40  # the model was read, not an empty list
    assert sorted(expected - documented) == [], "settings missing from README's Settings table"
    assert sorted(documented - expected) == [], "README documents settings that do not exist"


def test_every_route_is_named_in_the_http_api_section() -> None:
    api = _unnamed(_section("HTTP API"))
    app = create_app(Settings())
    routes = {
        (route.method, _unnamed(_path(route.resource)))
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert ("POST", "/send-email") in routes
    missing = sorted(
        f"{method} {path}" for method, path in routes if f"`{method} {path}`" not in api
    )
    assert missing == [], "routes with no `METHOD /path` mention in README's HTTP API section"


ROOT = Path(__file__).parent.parent


def _layout_rows() -> dict[str, str]:
    """The Layout table: each row's first cell (a path, or paths) -> what it says lives there."""
    return dict(re.findall(r"^\| (.+?) \| (.*) \|$", _section("Layout"), re.M))


def _modules() -> list[Path]:
    """The tree's Python modules: every one of the packages; the top level of bench/ and
    scripts/ (bench/baselines/ holds the other systems' apps, named by its folder)."""
    packages = [m for p in ("service", "jobs", "web", "tools") for m in (ROOT / p).rglob("*.py")]
    scripts = [m for p in ("bench", "scripts") for m in (ROOT / p).glob("*.py")]
    return sorted(packages + scripts)


def _declares_a_listed_job(module: Path) -> bool:
    """Whether ``module`` declares ``JOB = Job(...)`` and jobs/registry.py lists it: "Add your
    own job" says a job is one module and one registry line, so the table need not name it."""
    registry = (ROOT / "jobs" / "registry.py").read_text()
    declares = re.search(r"^JOB = Job\(", module.read_text(), re.M) is not None
    return declares and f"{module.stem}.JOB" in registry


def test_the_layout_section_names_every_module_of_the_tree() -> None:
    rows = _layout_rows()
    folders = [key.strip("`") for key in rows if re.fullmatch(r"`[\w/]+/`", key)]
    missing = []
    for module in _modules():
        relative = module.relative_to(ROOT).as_posix()
        if any(f"`{relative}`" in key for key in rows):
            continue  # a row of its own
        if module.name == "__init__.py":
            continue  # a package's docstring: its folder has the row
        if relative.startswith("jobs/") and _declares_a_listed_job(module):
            continue  # a job added the README's way: its module and a registry line, no row
        folder = max((f for f in folders if relative.startswith(f)), key=len, default=None)
        if folder is None or f"`{module.name}`" not in rows[f"`{folder}`"]:
            missing.append(relative)
    assert len(missing) < len(_modules()) // 2  # the rows were read
    assert missing == [], "modules the README's Layout table does not name"


def test_every_file_the_layout_section_names_exists() -> None:
    """The other way round: a module moved or removed leaves no stale name in the table."""
    stale = []
    for key, text in _layout_rows().items():
        paths = re.findall(r"`([^`]+)`", key)
        stale += [path for path in paths if not (ROOT / path).exists()]
        folder = paths[0] if len(paths) == 1 and paths[0].endswith("/") else None
        if folder is None:
            continue
        for name in re.findall(r"`([\w./]+\.(?:py|js|html|md|png))`", text):
            if not any((ROOT / folder).rglob(name)):
                stale.append(f"{folder}{name}")
    assert stale == [], "names in the README's Layout table with no such file in the tree"


def test_the_layout_section_states_the_layers_the_contracts_enforce() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    layers = re.search(r'containers = \["service"\]\nlayers = \[\n(.*?)\]', pyproject, re.S)
    assert layers
    order = [line.strip().strip('",') for line in layers.group(1).splitlines() if line.strip()]
    stated = " > ".join(f"`{layer.replace(' | ', '`, `')}`" for layer in order)
    assert stated in " ".join(_section("Layout").split())
    for layer in order:
        for name in layer.split(" | "):
            assert (ROOT / "service" / name).is_dir(), f"{name}: a layer with no folder"
