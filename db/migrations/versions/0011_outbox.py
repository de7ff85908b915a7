"""outbox: exports delivered by a loop with backoff, leased; superseding SR versions (issue 20)

Every export row carries its next attempt time and a lease (who delivers it now), and one row
per version of a study's SR: a later version names its predecessor and takes the next Instance
Number. Pending rows of an earlier release are due at once.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('lease_token', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sr_series_instance_uid', sa.String(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('instance_number', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('predecessor_sr_uid', sa.String(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('predecessor_series_uid', sa.String(length=64),
                                      nullable=True))
        batch_op.create_index(batch_op.f('ix_exports_next_attempt_at'), ['next_attempt_at'],
                              unique=False)
        # One row per SR version (a late image makes another SR of the same study and model).
        batch_op.drop_constraint('uq_exports_study_instance_uid', type_='unique')
        batch_op.create_unique_constraint(
            'uq_exports_study_instance_uid',
            ['study_instance_uid', 'destination', 'sr_sop_instance_uid'])
    op.execute("UPDATE exports SET next_attempt_at = updated_at WHERE status = 'pending'")


def downgrade() -> None:
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.drop_constraint('uq_exports_study_instance_uid', type_='unique')
        batch_op.create_unique_constraint(
            'uq_exports_study_instance_uid',
            ['study_instance_uid', 'destination', 'model_version_id'])
        batch_op.drop_index(batch_op.f('ix_exports_next_attempt_at'))
        for column in ('predecessor_series_uid', 'predecessor_sr_uid', 'instance_number',
                       'sr_series_instance_uid', 'lease_until', 'lease_token',
                       'next_attempt_at'):
            batch_op.drop_column(column)
