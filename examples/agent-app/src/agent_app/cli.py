"""Command line: ``agent-app serve | worker | beat | migrate | ping``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

from agent_app.logs import configure_logging
from agent_app.multiproc import use_multiprocess_dir
from agent_app.settings import Settings, SettingsError, load_settings

log = logging.getLogger("agent_app.cli")


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises SIGTERM after its graceful shutdown; make that a clean exit (status 0)."""
    raise SystemExit(0)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    if args.workers > 1:
        # Each worker process counts its own requests: share them (one scrape sees all).
        use_multiprocess_dir()
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "agent_app.api:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    return 0


def worker(args: argparse.Namespace, settings: Settings) -> int:
    # The pool's processes run the tasks: their counters go to a shared
    # directory, which the main process serves (WORKER_METRICS_PORT).
    use_multiprocess_dir()
    from agent_app.metrics import serve_metrics
    from agent_app.worker import app

    if settings.worker_metrics_port:
        serve_metrics(settings.worker_metrics_address, settings.worker_metrics_port)

    argv = ["worker", f"--loglevel={settings.log_level}", f"--concurrency={settings.worker_concurrency}"]
    app.worker_main([*argv, *args.celery_args])
    return 0


def beat(args: argparse.Namespace, settings: Settings) -> int:
    from agent_app.worker import app

    app.start(
        [
            "beat",
            f"--loglevel={settings.log_level}",
            f"--schedule={settings.beat_schedule_file}",
            *args.celery_args,
        ]
    )
    return 0


def migrate(args: argparse.Namespace, settings: Settings) -> int:
    import psycopg

    from agent_app.migrations import migrate as run_migrations

    try:
        applied = run_migrations(settings.database_url)
    except (psycopg.Error, OSError) as exc:
        print(f"agent-app migrate: failed: {exc}".strip(), file=sys.stderr)
        return 1
    log.info(
        "migrations complete: %s", ", ".join(map(str, applied)) if applied else "schema already up to date"
    )
    return 0


def ping(args: argparse.Namespace, settings: Settings) -> int:
    """Liveness of this container's worker or beat: a broker round trip to its own node.

    A minimal Celery app (no task modules) keeps the probe cheap enough for a
    container healthcheck on a fraction of a CPU.
    """
    import socket

    from celery import Celery

    node = args.node or f"{'celerybeat' if args.what == 'beat' else 'celery'}@{socket.gethostname()}"
    probe = Celery("agent_app_probe", broker=settings.redis_url, set_as_current=False)
    try:
        replies = probe.control.ping(destination=[node], timeout=args.timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to ask is a failed probe
        print(f"agent-app ping: {node}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        probe.close()
    if any(node in reply for reply in replies):
        print(f"{node}: pong")
        return 0
    print(f"agent-app ping: {node} did not answer within {args.timeout}s", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-app", description="Reference AI agent service.")
    commands = parser.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p_serve.set_defaults(handler=serve)

    p_worker = commands.add_parser("worker", help="run the Celery worker (unknown options go to celery)")
    p_worker.set_defaults(handler=worker, passes_through=True)

    p_beat = commands.add_parser("beat", help="run the Celery beat scheduler (unknown options go to celery)")
    p_beat.set_defaults(handler=beat, passes_through=True)

    p_migrate = commands.add_parser("migrate", help="create or update the database schema, then exit")
    p_migrate.set_defaults(handler=migrate)

    p_ping = commands.add_parser("ping", help="healthcheck: does this host's worker or beat answer? (exit 0/1)")
    p_ping.add_argument("what", choices=["worker", "beat"])
    p_ping.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    p_ping.add_argument("--node", help="node name to ask (default celery@HOST or celerybeat@HOST, HOST this host)")
    p_ping.set_defaults(handler=ping)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, celery_args = parser.parse_known_args(argv)
    if celery_args and not getattr(args, "passes_through", False):
        parser.error(f"unrecognized arguments: {' '.join(celery_args)}")
    args.celery_args = celery_args
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"agent-app: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    return args.handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
