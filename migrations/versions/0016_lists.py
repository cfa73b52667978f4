"""lists: mailing lists, a person's subscription to each, a list's topics

The single list of before (``MAILER_LIST_NAME``, ``MAILER_LIST_ID``, read as the settings
read them: the environment over ``.env``) becomes the first list, ``newsletter``, with
today's settings: its From, Reply-To and consent text are left empty, which means "the
settings' values", so nothing a reader gets changes. Every
subscriber's status, confirmation and unsubscribe times move, unchanged, to their
subscription to that list; every edition, confirmation link and list-level consent event
(sign-up, confirmation, unsubscribe…) is that list's. Person-level events (suppression,
erasure, the preference page's requests) name no list.

A confirmation link (``confirmation_token.lists``) confirms the lists it was mailed for.
No foreign keys on the new ``list_id`` columns of edition and consent_event: SQLite cannot
add a column with one (it would rebuild the tables, which foreign keys and the delivery
triggers make unsafe), and a list is never deleted, only archived. For the same reason every
column here is added and dropped in place (ALTER TABLE), never by a batch.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

from mailer.environment import read_variables

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)

#: Consent events about one list (the others are about the person, or the address).
LIST_KINDS = ("subscribed", "already_subscribed", "confirmation_sent", "confirmed",
              "welcome_sent", "unsubscribed", "resubscribed", "imported")


def upgrade() -> None:
    op.create_table(
        "mailing_list",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(60), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("list_id", sa.String(255), nullable=False),
        sa.Column("from_address", sa.String(400), nullable=True),
        sa.Column("reply_to", sa.String(400), nullable=True),
        sa.Column("consent_text", sa.Text(), nullable=True),
        sa.Column("consent_version", sa.String(32), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("archive", sa.Boolean(), nullable=False),
        sa.Column("schedule_cron", sa.String(100), nullable=True),
        sa.Column("click_tracking", sa.Boolean(), nullable=True),
        sa.Column("no_topics", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("archived_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_mailing_list"),
        sa.UniqueConstraint("slug", name="uq_mailing_list_slug"),
        sa.UniqueConstraint("list_id", name="uq_mailing_list_list_id"),
    )
    op.create_table(
        "subscription",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(),
                  sa.ForeignKey("subscriber.id", name="fk_subscription_subscriber_id_subscriber",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("list_id", sa.Integer(),
                  sa.ForeignKey("mailing_list.id",
                                name="fk_subscription_list_id_mailing_list",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.Column("confirmed_at", WHEN, nullable=True),
        sa.Column("unsubscribed_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_subscription"),
        sa.UniqueConstraint("subscriber_id", "list_id", name="uq_subscription_subscriber_id"),
    )
    op.create_index("ix_subscription_list_status_subscriber", "subscription",
                    ["list_id", "status", "subscriber_id"])
    op.create_table(
        "topic",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(),
                  sa.ForeignKey("mailing_list.id", name="fk_topic_list_id_mailing_list",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("category", sa.String(200), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("merged_into", sa.Integer(),
                  sa.ForeignKey("topic.id", name="fk_topic_merged_into_topic",
                                ondelete="SET NULL"), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_topic"),
        sa.UniqueConstraint("list_id", "category", name="uq_topic_list_id"),
    )

    bind = op.get_bind()
    # Where the settings come from (the environment over .env, names in any case), so that
    # the list keeps the name and List-Id its readers know; the defaults are today's.
    found = read_variables()
    first = sa.table("mailing_list", *(sa.column(c) for c in (
        "id", "slug", "name", "description", "list_id", "public", "archive", "no_topics",
        "position", "created_at")))
    bind.execute(first.insert().values(
        id=1, slug="newsletter",
        name=found.get("MAILER_LIST_NAME") or "CEP Newsletter",
        description="", list_id=found.get("MAILER_LIST_ID")
        or "newsletter.cep-probation.example.org",
        public=True, archive=True, no_topics="skip", position=0,
        created_at=sa.func.current_timestamp()))
    if bind.dialect.name == "postgresql":  # the id was given: the sequence goes past it
        op.execute("SELECT setval('mailing_list_id_seq', (SELECT max(id) FROM mailing_list))")
    op.execute(
        "INSERT INTO subscription (subscriber_id, list_id, status, topics, created_at, "
        "updated_at, confirmed_at, unsubscribed_at) SELECT id, 1, status, NULL, created_at, "
        "updated_at, confirmed_at, unsubscribed_at FROM subscriber ORDER BY id")

    # Plain ALTER TABLE ... ADD COLUMN, never a batch: on SQLite a batch rebuilds a table
    # whose new column has a server default (edition), and dropping the old edition table
    # fires its foreign keys' ON DELETE (edition links and articles gone, bounces losing
    # their edition) and drops the delivery trigger that lives on it.
    op.add_column("edition", sa.Column("list_id", sa.Integer(), nullable=False,
                                       server_default=sa.text("1")))
    op.add_column("confirmation_token", sa.Column("lists", sa.JSON(), nullable=True))
    op.execute("UPDATE confirmation_token SET lists = '[1]'")
    op.add_column("consent_event", sa.Column("list_id", sa.Integer(), nullable=True))
    kinds = ", ".join(f"'{k}'" for k in LIST_KINDS)
    op.execute(f"UPDATE consent_event SET list_id = 1 WHERE kind IN ({kinds})")  # noqa: S608
    op.create_index("ix_edition_list_id", "edition", ["list_id"])

    op.drop_index("ix_subscriber_status_id", table_name="subscriber")
    for column in ("status", "confirmed_at", "unsubscribed_at"):
        # SQLite drops a plain column in place (3.35+); a batch would rebuild the table,
        # and with it the delivery trigger and every foreign key that points here.
        op.execute(f"ALTER TABLE subscriber DROP COLUMN {column}")


def downgrade() -> None:
    # ADD COLUMN in place, as in upgrade: a rebuilt subscriber table would fire its
    # foreign keys' ON DELETE (tokens, subscriptions, consent events) and lose its trigger.
    op.add_column("subscriber", sa.Column("status", sa.String(16), nullable=False,
                                          server_default="unsubscribed"))
    op.add_column("subscriber", sa.Column("confirmed_at", WHEN, nullable=True))
    op.add_column("subscriber", sa.Column("unsubscribed_at", WHEN, nullable=True))
    # A person not on the first list had no place in the single list of before: they are
    # kept, as unsubscribed (never mailed), rather than lost.
    op.execute(
        "UPDATE subscriber SET status = (SELECT b.status FROM subscription b WHERE "
        "b.subscriber_id = subscriber.id AND b.list_id = 1), confirmed_at = (SELECT "
        "b.confirmed_at FROM subscription b WHERE b.subscriber_id = subscriber.id AND "
        "b.list_id = 1), unsubscribed_at = (SELECT b.unsubscribed_at FROM subscription b "
        "WHERE b.subscriber_id = subscriber.id AND b.list_id = 1) WHERE EXISTS (SELECT 1 "
        "FROM subscription b WHERE b.subscriber_id = subscriber.id AND b.list_id = 1)")
    if op.get_bind().dialect.name == "postgresql":
        # 0015's column had no default (SQLite keeps it: dropping it would rebuild the table).
        op.alter_column("subscriber", "status", server_default=None)
    op.create_index("ix_subscriber_status_id", "subscriber", ["status", "id"])
    op.drop_index("ix_edition_list_id", table_name="edition")
    for table, column in (("consent_event", "list_id"), ("confirmation_token", "lists"),
                          ("edition", "list_id")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.drop_table("topic")
    op.drop_index("ix_subscription_list_status_subscriber", table_name="subscription")
    op.drop_table("subscription")
    op.drop_table("mailing_list")
