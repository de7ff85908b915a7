"""audit chain and claim owners (issue 21)

audit_events.chain_hash: each audit event carries a keyed hash chained to the one before.
studies.claimed_by: the process (host:pid:start) holding a processing image, so the next run on
that host frees what a dead or interrupted process held without waiting for the lease.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy): on SQLite a copied table would lose the triggers that
    # refuse UPDATE and DELETE. Earlier events keep NULL: they predate the chain.
    op.add_column('audit_events', sa.Column('chain_hash', sa.String(length=64), nullable=True))
    op.add_column('studies', sa.Column('claimed_by', sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column('audit_events', 'chain_hash')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('claimed_by')  # plain DROP COLUMN: the triggers stay
