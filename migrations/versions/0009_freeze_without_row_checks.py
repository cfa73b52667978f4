"""freeze without per-row checks: the delivery table's links kept by triggers

Freezing a million readers spent most of its time in two foreign-key checks that
PostgreSQL runs once per inserted row (a query each, and a row lock on every subscriber):
about 8 s each of a 35 s freeze. The freeze reads the subscriber ids it inserts in the same
statement, under the edition's row lock and a lock that keeps erasure out, so the checks
prove nothing it does not already know. What the foreign keys *did* when a row went away
is kept, for every writer, by triggers:

- deleting an edition deletes its deliveries (was ``ON DELETE CASCADE``);
- deleting a subscriber (erasure) blanks ``delivery.subscriber_id`` (was ``ON DELETE SET
  NULL``).

And one index fewer per inserted row: the unique (edition, subscriber) becomes unique
(subscriber, edition), which also serves a subscriber's history, so
``ix_delivery_subscriber_id`` goes.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PG_UP = [
    """CREATE FUNCTION delivery_of_deleted_edition() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM delivery WHERE edition_id = OLD.id;
        RETURN OLD;
    END $$""",
    """CREATE TRIGGER edition_deleted_deliveries AFTER DELETE ON edition
    FOR EACH ROW EXECUTE FUNCTION delivery_of_deleted_edition()""",
    """CREATE FUNCTION delivery_of_deleted_subscriber() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE delivery SET subscriber_id = NULL WHERE subscriber_id = OLD.id;
        RETURN OLD;
    END $$""",
    """CREATE TRIGGER subscriber_deleted_deliveries AFTER DELETE ON subscriber
    FOR EACH ROW EXECUTE FUNCTION delivery_of_deleted_subscriber()""",
]
_PG_DOWN = [
    "DROP TRIGGER IF EXISTS subscriber_deleted_deliveries ON subscriber",
    "DROP FUNCTION IF EXISTS delivery_of_deleted_subscriber()",
    "DROP TRIGGER IF EXISTS edition_deleted_deliveries ON edition",
    "DROP FUNCTION IF EXISTS delivery_of_deleted_edition()",
]
_SQLITE_UP = [
    """CREATE TRIGGER edition_deleted_deliveries AFTER DELETE ON edition
    BEGIN DELETE FROM delivery WHERE edition_id = OLD.id; END""",
    """CREATE TRIGGER subscriber_deleted_deliveries AFTER DELETE ON subscriber
    BEGIN UPDATE delivery SET subscriber_id = NULL WHERE subscriber_id = OLD.id; END""",
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS subscriber_deleted_deliveries",
    "DROP TRIGGER IF EXISTS edition_deleted_deliveries",
]


def upgrade() -> None:
    # SQLite rebuilds the table here: the triggers (which name it) come after.
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_constraint("fk_delivery_edition_id_edition", type_="foreignkey")
        batch_op.drop_constraint("fk_delivery_subscriber_id_subscriber", type_="foreignkey")
        batch_op.drop_constraint("uq_delivery_edition_id", type_="unique")
        batch_op.drop_index("ix_delivery_subscriber_id")
        batch_op.create_unique_constraint("uq_delivery_subscriber_id",
                                          ["subscriber_id", "edition_id"])
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_UP if postgres else _SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_DOWN if postgres else _SQLITE_DOWN:
        op.execute(statement)
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_constraint("uq_delivery_subscriber_id", type_="unique")
        batch_op.create_index("ix_delivery_subscriber_id", ["subscriber_id"], unique=False)
        batch_op.create_unique_constraint("uq_delivery_edition_id",
                                          ["edition_id", "subscriber_id"])
        batch_op.create_foreign_key("fk_delivery_subscriber_id_subscriber", "subscriber",
                                    ["subscriber_id"], ["id"], ondelete="SET NULL")
        batch_op.create_foreign_key("fk_delivery_edition_id_edition", "edition",
                                    ["edition_id"], ["id"], ondelete="CASCADE")
