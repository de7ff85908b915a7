"""audit chain: each audit event carries a keyed hash chained to the one before (issue 21)

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy): on SQLite a copied table would lose the triggers that
    # refuse UPDATE and DELETE. Earlier events keep NULL: they predate the chain.
    op.add_column('audit_events', sa.Column('chain_hash', sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column('audit_events', 'chain_hash')  # plain DROP COLUMN: the triggers stay
