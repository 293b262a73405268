"""Celery application factory (Redis as broker and result backend)."""

from __future__ import annotations

from celery import Celery

from agent_app.settings import Settings

EXECUTE_RUN_TASK = "agent_app.tasks.execute_run"
HEARTBEAT_TASK = "agent_app.tasks.heartbeat"


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``; the API uses it only to send tasks by name."""
    app = Celery(
        "agent_app", broker=settings.redis_url, backend=settings.redis_url, include=["agent_app.tasks"]
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        result_expires=3600,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task a dead worker took (never acknowledged) is redelivered this long after;
        # longer than the longest task, or a slow task runs twice. The sweep that finds
        # such tasks runs every few seconds (kombu's default: about every 100 s).
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_seconds,
            "unacked_restore_interval": max(1, min(10, int(settings.broker_visibility_timeout_seconds // 4))),
            "unacked_restore_throttle": 1,
        },
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        beat_schedule_filename=settings.beat_schedule_file,
        # Beat answers `celery inspect ping --destination celerybeat@<host>`
        # only while its scheduler loop keeps ticking: a liveness probe that
        # stays truthful for as long as beat runs (its schedule file is not
        # rewritten when nothing changes, so its age proves nothing).
        beat_enable_remote_control=True,
        beat_max_loop_interval=settings.beat_max_loop_interval_seconds,
        beat_remote_control_max_tick_age=settings.beat_max_tick_age_seconds,
        beat_schedule={
            "heartbeat": {"task": HEARTBEAT_TASK, "schedule": settings.heartbeat_interval_seconds},
        },
    )
    return app
