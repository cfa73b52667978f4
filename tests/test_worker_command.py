"""The worker users run: Procfile.dev (make run) and docker-compose.yml start it alike, and
the reliability tests start exactly that command (tests/support/processes.UserWorker)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.processes import procfile_command

ROOT = Path(__file__).resolve().parents[1]


def test_procfile_and_compose_start_the_same_worker() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    in_compose = compose["services"]["worker"]["command"]
    in_procfile = procfile_command("worker")
    assert in_procfile[0].endswith("/celery") and in_compose[0] == "celery"
    assert in_procfile[1:] == in_compose[1:]


def test_the_app_uses_the_fixed_redis_transport() -> None:
    from workers.app import app
    from workers.broker import Transport

    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)
