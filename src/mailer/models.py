"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from mailer.api_tokens.models import ApiToken
from mailer.articles.models import Article
from mailer.bounces.models import Bounce, InboundMessage, WebhookEvent
from mailer.clicks.models import ClickFlush, EditionLink
from mailer.db import Base
from mailer.deliveries.models import Delivery
from mailer.delivery.models import SenderProcess
from mailer.editions.models import Edition, EditionArticle
from mailer.insight.models import EditionDeferral, EditionSummary, ListWeek
from mailer.lists.models import MailingList, Subscription, Topic
from mailer.staff.models import (
    AuditEntry,
    ScheduledDraft,
    StaffRecoveryCode,
    StaffSession,
    StaffUser,
)
from mailer.subscribers.models import ConfirmationToken, ConsentEvent, Subscriber, Suppression
from mailer.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)

__all__ = [
    "ApiToken", "Article", "AuditEntry", "Base", "Bounce", "ClickFlush", "ConfirmationToken",
    "ConsentEvent", "Delivery", "Edition", "EditionArticle", "EditionDeferral", "EditionLink",
    "EditionSummary", "InboundMessage", "ListWeek", "MailingList", "ScheduledDraft",
    "SenderProcess",
    "StaffRecoveryCode", "StaffSession", "StaffUser", "Subscriber", "Subscription",
    "Suppression", "Topic", "WebhookAttempt", "WebhookDelivery", "WebhookEndpoint",
    "WebhookEvent", "WebhookMessage",
]
