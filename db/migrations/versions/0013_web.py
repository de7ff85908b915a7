"""web: users and reads of the reading list in a browser (issue 22)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('role', sa.Enum('reader', 'admin', name='userrole', native_enum=False,
                                  length=16), nullable=False),
        sa.Column('password_hash', sa.String(length=255), nullable=True),
        sa.Column('disabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
        sa.UniqueConstraint('name', name=op.f('uq_users_name')),
    )
    op.create_table(
        'reads',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('image_id', sa.Integer(), nullable=False),
        sa.Column('prediction_id', sa.Integer(), nullable=True),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('verdict', sa.Enum('agree', 'disagree', name='readverdict', native_enum=False,
                                     length=16), nullable=False),
        sa.Column('label', sa.String(length=16), nullable=True),
        sa.Column('subtype', sa.String(length=16), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['studies.id'],
                                name=op.f('fk_reads_image_id_studies'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['prediction_id'], ['predictions.id'],
                                name=op.f('fk_reads_prediction_id_predictions'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_reads_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reads')),
    )
    with op.batch_alter_table('reads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reads_image_id'), ['image_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reads_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reads_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('reads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reads_created_at'))
        batch_op.drop_index(batch_op.f('ix_reads_user_id'))
        batch_op.drop_index(batch_op.f('ix_reads_image_id'))
    op.drop_table('reads')
    op.drop_table('users')
