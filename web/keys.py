"""Typed keys for what the web app shares between handlers."""

from __future__ import annotations

from aiohttp import web
from arq.connections import ArqRedis

from service.engine.queues import QueueLayout
from service.records.status import Declared
from service.runtime import Registry
from service.store.database import Database
from service.store.storage import Storage
from service.store.subscriptions import SharedSubscriptions
from settings import Settings
from web.metrics import WebMetrics

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", ArqRedis)
DB: web.AppKey[Database] = web.AppKey("db")  # SQLite or PostgreSQL (DATABASE_URL)
STORAGE = web.AppKey("storage", Storage)  # uploads, thumbnails, reports (service/store/storage/)
REGISTRY = web.AppKey("registry", Registry)  # the declared jobs (jobs/registry.py)
DECLARED = web.AppKey("declared", Declared)  # what status documents show of them
QUEUES = web.AppKey("queues", QueueLayout)  # every queue, each job's queue and priority
WEB_METRICS = web.AppKey("web_metrics", WebMetrics)
OPENAPI = web.AppKey("openapi", bytes)  # the API description, built at start-up (web.openapi)
SUBSCRIPTIONS = web.AppKey("subscriptions", SharedSubscriptions)  # the one pub/sub connection
