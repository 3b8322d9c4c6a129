"""Queue index in claim order: (project_id, status, item_id, slot), so the first claimable slot is read from the
index instead of sorting every open slot (PostgreSQL sorted 23k rows per claim on an 8k-item project).

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_index('ix_assignments_queue')
        batch_op.create_index('ix_assignments_queue', ['project_id', 'status', 'item_id', 'slot'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_index('ix_assignments_queue')
        batch_op.create_index('ix_assignments_queue', ['project_id', 'status', 'item_id'], unique=False)
