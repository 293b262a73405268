"""Celery entry module: ``celery -A agent_app.worker worker|beat`` (or ``agent-app worker|beat``)."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging

from agent_app.celery_app import create_celery_app
from agent_app.logs import configure_logging
from agent_app.settings import load_settings

settings = load_settings()
app = create_celery_app(settings)


@setup_logging.connect
def _json_logging(**_: Any) -> None:
    """Replace Celery's log setup with the JSON stdout handler."""
    configure_logging(settings.log_level)
