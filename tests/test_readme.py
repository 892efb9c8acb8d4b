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
