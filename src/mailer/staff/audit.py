"""The audit log, as the staff's code imports it: :mod:`mailer.audit` is where it lives."""

from mailer.audit import AuditEntry, recent, record

__all__ = ["AuditEntry", "recent", "record"]
