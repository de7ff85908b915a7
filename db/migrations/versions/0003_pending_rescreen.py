"""studies: rescreen_batch_id (a re-screen that has not reached the study yet); patient_sex
as wide as its VR (CS, 16)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.alter_column('patient_sex', existing_type=sa.String(length=8),
                              type_=sa.String(length=16), existing_nullable=True)
        batch_op.add_column(sa.Column('rescreen_batch_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_studies_rescreen_batch_id'), ['rescreen_batch_id'],
                              unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_studies_rescreen_batch_id_batches'),
                                    'batches', ['rescreen_batch_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_studies_rescreen_batch_id_batches'),
                                 type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_studies_rescreen_batch_id'))
        batch_op.drop_column('rescreen_batch_id')
        batch_op.alter_column('patient_sex', existing_type=sa.String(length=16),
                              type_=sa.String(length=8), existing_nullable=True)
