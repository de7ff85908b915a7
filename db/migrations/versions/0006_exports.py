"""exports: DICOM SR/SC results sent to PACS, DICOMweb or a folder (issue 11, send side)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'exports',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
        sa.Column('destination', sa.String(length=512), nullable=False),
        sa.Column('model_version_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.Enum('pending', 'sent', 'failed', name='exportstatus',
                                    native_enum=False, length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('sr_sop_instance_uid', sa.String(length=64), nullable=True),
        sa.Column('sc_sop_instance_uids', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                                name=op.f('fk_exports_model_version_id_model_versions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_exports')),
        sa.UniqueConstraint('study_instance_uid', 'destination', 'model_version_id',
                            name=op.f('uq_exports_study_instance_uid')),
    )
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_exports_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_exports_study_instance_uid'),
                              ['study_instance_uid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('exports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_exports_study_instance_uid'))
        batch_op.drop_index(batch_op.f('ix_exports_status'))
    op.drop_table('exports')
