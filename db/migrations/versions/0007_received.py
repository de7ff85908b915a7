"""receiving over DICOM: spooled instances and stable studies (issue 11, receive side)

One row per instance file received by `screen listen` and registered from the spool: where it is,
who sent it, when it arrived, the study it became and whether that study has been enqueued. The
spool itself is the record of what is not registered yet (so a receipt never needs the database).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'received_instances',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('sop_instance_uid', sa.String(length=64), nullable=True),
        sa.Column('study_instance_uid', sa.String(length=64), nullable=True),
        sa.Column('spool_path', sa.Text(), nullable=False),
        sa.Column('calling_aet', sa.String(length=16), nullable=True),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('study_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'],
                                name=op.f('fk_received_instances_study_id_studies'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_received_instances')),
        sa.UniqueConstraint('sha256', name=op.f('uq_received_instances_sha256')),
    )
    with op.batch_alter_table('received_instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_received_instances_study_id'), ['study_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_received_instances_study_instance_uid'),
                              ['study_instance_uid'], unique=False)


def downgrade() -> None:
    op.drop_table('received_instances')
