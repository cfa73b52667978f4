"""``mailer webhooks add|list|remove|enable|redeliver``: thin over the service; the secret
printed once, a private address refused with the reason, the audit entries as cli:<user>."""

from __future__ import annotations

import re

from sqlalchemy import select
from typer.testing import CliRunner

from mailer.audit import AuditEntry
from mailer.cli import app
from mailer.db import transaction
from mailer.webhooks.models import WebhookEndpoint

runner = CliRunner()


def mailer(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_add_list_remove(clean) -> None:
    added = mailer("webhooks", "add", "http://127.0.0.1:9/hooks", "--event",
                   "subscriber.confirmed", "--event", "edition.sent", "--description", "CRM")
    assert added.exit_code == 0, added.output
    secret = added.stdout.splitlines()[0]
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    assert "shown only this once" in added.stderr
    with transaction() as session:
        endpoint = session.scalars(select(WebhookEndpoint)).one()
        assert endpoint.secret == secret and endpoint.description == "CRM"
        assert endpoint.events == ["subscriber.confirmed", "edition.sent"]
        assert endpoint.created_by.startswith("cli:")

    listed = mailer("webhooks", "list")
    assert listed.exit_code == 0
    assert "http://127.0.0.1:9/hooks" in listed.output and "enabled" in listed.output
    assert "subscriber.confirmed, edition.sent" in listed.output and secret not in listed.output

    every = mailer("webhooks", "add", "http://127.0.0.1:9/all", "--event", "all")
    assert every.exit_code == 0, every.output

    removed = mailer("webhooks", "remove", str(endpoint.id))
    assert removed.exit_code == 0 and "is removed" in removed.output
    again = mailer("webhooks", "remove", str(endpoint.id))
    assert again.exit_code == 1 and "no webhook endpoint" in again.output
    with transaction() as session:
        assert [e.url for e in session.scalars(select(WebhookEndpoint))] == [
            "http://127.0.0.1:9/all"]
        assert [a.action for a in session.scalars(select(AuditEntry).where(
            AuditEntry.action.like("webhook.%")).order_by(AuditEntry.id))] == [
            "webhook.add", "webhook.add", "webhook.remove"]


def test_refusals_name_the_reason(clean) -> None:
    private = mailer("webhooks", "add", "http://192.168.1.20/hooks", "--event",
                     "subscriber.confirmed")
    assert private.exit_code == 1
    assert "is a private address" in private.output
    assert "MAILER_WEBHOOK_ALLOWED_HOSTS" in private.output
    unknown = mailer("webhooks", "add", "http://127.0.0.1:9/x", "--event", "reader.happy")
    assert unknown.exit_code == 1 and "Unknown event(s): reader.happy" in unknown.output
    assert mailer("webhooks", "enable", "99").exit_code == 1
    assert mailer("webhooks", "redeliver", "99").exit_code == 1
    with transaction() as session:
        assert session.scalars(select(WebhookEndpoint)).all() == []
