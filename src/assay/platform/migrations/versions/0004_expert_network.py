"""Expert network: expert profiles and domains, reputation per domain, routed expert tasks, reward batches and the
append-only reward ledger (UPDATE and DELETE refused by triggers on reward_batches and reward_ledger).

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# frozen copy of assay.experts.models.append_only_ddl at this revision
_APPEND_ONLY = ('reward_batches', 'reward_ledger')


def _trigger_sql(dialect: str, table: str) -> list[str]:
    if dialect == 'sqlite':
        return [f"CREATE TRIGGER {table}_no_{o.lower()} BEFORE {o} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END" for o in ('UPDATE', 'DELETE')]
    if dialect == 'postgresql':
        return ["CREATE OR REPLACE FUNCTION assay_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only'; END $$",
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION assay_refuse_change()"]
    return []


def upgrade() -> None:
    op.create_table('expert_profiles',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('available', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('expert_domains',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('domain', sa.String(length=128), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['expert_profiles.user_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'domain')
    )
    with op.batch_alter_table('expert_domains', schema=None) as batch_op:
        batch_op.create_index('ix_expert_domains_domain', ['domain'], unique=False)

    op.create_table('expert_reputation',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('domain', sa.String(length=128), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('gold_n', sa.Float(), nullable=False),
    sa.Column('gold_skill', sa.Float(), nullable=True),
    sa.Column('peer_n', sa.Integer(), nullable=False),
    sa.Column('peer_skill', sa.Float(), nullable=True),
    sa.Column('review_n', sa.Integer(), nullable=False),
    sa.Column('review_skill', sa.Float(), nullable=True),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('computed_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'domain')
    )
    with op.batch_alter_table('expert_reputation', schema=None) as batch_op:
        batch_op.create_index('ix_expert_reputation_domain', ['domain', 'score'], unique=False)

    op.create_table('expert_tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task', sa.String(length=200), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('domains', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('explanation', sa.Text(), nullable=False),
    sa.Column('routed_at', sa.Float(), nullable=False),
    sa.Column('closed_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task', 'user_id', name='uq_expert_tasks_task_user')
    )
    with op.batch_alter_table('expert_tasks', schema=None) as batch_op:
        batch_op.create_index('ix_expert_tasks_user_status', ['user_id', 'status'], unique=False)

    op.create_table('reward_batches',
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('params', sa.Text(), nullable=False),
    sa.Column('inputs_digest', sa.String(length=64), nullable=False),
    sa.Column('n_reports', sa.Integer(), nullable=False),
    sa.Column('n_entries', sa.Integer(), nullable=False),
    sa.Column('total', sa.Float(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('batch_id')
    )
    op.create_table('reward_ledger',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('task', sa.String(length=200), nullable=False),
    sa.Column('amount', sa.Float(), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('computed_at', sa.Float(), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['reward_batches.batch_id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('batch_id', 'user_id', 'task', 'rule', name='uq_reward_ledger_once')
    )
    with op.batch_alter_table('reward_ledger', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reward_ledger_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index('ix_reward_ledger_user', ['user_id', 'computed_at'], unique=False)

    dialect = op.get_bind().dialect.name
    for table in _APPEND_ONLY:
        for statement in _trigger_sql(dialect, table):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in _APPEND_ONLY:
        if dialect == 'sqlite':
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        elif dialect == 'postgresql':
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    with op.batch_alter_table('reward_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_reward_ledger_user')
        batch_op.drop_index(batch_op.f('ix_reward_ledger_batch_id'))
    op.drop_table('reward_ledger')
    op.drop_table('reward_batches')
    with op.batch_alter_table('expert_tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_expert_tasks_user_status')
    op.drop_table('expert_tasks')
    with op.batch_alter_table('expert_reputation', schema=None) as batch_op:
        batch_op.drop_index('ix_expert_reputation_domain')
    op.drop_table('expert_reputation')
    with op.batch_alter_table('expert_domains', schema=None) as batch_op:
        batch_op.drop_index('ix_expert_domains_domain')
    op.drop_table('expert_domains')
    op.drop_table('expert_profiles')
    if dialect == 'postgresql':
        op.execute("DROP FUNCTION IF EXISTS assay_refuse_change()")
