"""predictions: in_scope, scope_reason, atypicality; heatmaps (one Grad-CAM map a prediction)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('in_scope', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('scope_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('atypicality', sa.Float(), nullable=True))
    op.create_table(
        'heatmaps',
        sa.Column('prediction_id', sa.Integer(), nullable=False),
        sa.Column('height', sa.Integer(), nullable=False),
        sa.Column('width', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['prediction_id'], ['predictions.id'],
                                name=op.f('fk_heatmaps_prediction_id_predictions'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('prediction_id', name=op.f('pk_heatmaps')),
    )


def downgrade() -> None:
    op.drop_table('heatmaps')
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('atypicality')
        batch_op.drop_column('scope_reason')
        batch_op.drop_column('in_scope')
