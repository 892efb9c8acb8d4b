"""Several workers starting at once on a new SQLite file all start (none dies on a lock)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.store.database import open_database
from settings import Settings

ROUNDS = 20  # the race is real but not every time: 20 rounds of 4 caught it nearly always
WORKERS = 4


async def test_workers_opening_a_new_database_at_once_all_get_it(tmp_path: Path) -> None:
    for n in range(ROUNDS):
        settings = Settings(database_url=f"sqlite:///{tmp_path}/round{n}/app.db")
        opened = await asyncio.gather(*(open_database(settings) for _ in range(WORKERS)))
        try:
            user = await opened[0].create_user("Ann", f"ann{n}@example.com")
            assert await opened[-1].get_user(user.id) == user
        finally:
            for database in opened:
                await database.close()
