"""robustness: twin copies of one SOP instance accounted for (issue 12)

Every distinct file received for a study is a ``study_files`` row: the primary copy the study is
screened from, and its twins (same SOP Instance UID, other content). Existing studies get their
own file as the primary row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'study_files',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('role', sa.Enum('primary', 'twin', name='filerole', native_enum=False,
                                  length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('batch_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'],
                                name=op.f('fk_study_files_study_id_studies'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['batch_id'], ['batches.id'],
                                name=op.f('fk_study_files_batch_id_batches')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_study_files')),
        sa.UniqueConstraint('sha256', name=op.f('uq_study_files_sha256')),
    )
    with op.batch_alter_table('study_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_files_study_id'), ['study_id'], unique=False)
    op.execute(
        "INSERT INTO study_files (study_id, sha256, path, role, batch_id) "
        "SELECT id, sha256, source_path, 'primary', batch_id FROM studies")


def downgrade() -> None:
    with op.batch_alter_table('study_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_files_study_id'))
    op.drop_table('study_files')
