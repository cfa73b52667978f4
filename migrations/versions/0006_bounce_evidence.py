"""bounce.evidence: how strong the evidence of a hard bounce is

"strong" (a 5.1.x before DATA, the address echoed with "user unknown", a domain that does
not exist) suppresses at once; "weak" (a wording alone, no code, a reply after DATA)
suppresses only when a second bounce of the address for another edition repeats it.
Rows from before this revision get '' and act as they did.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bounce", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evidence", sa.String(length=8), nullable=False,
                                      server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("bounce", schema=None) as batch_op:
        batch_op.drop_column("evidence")
