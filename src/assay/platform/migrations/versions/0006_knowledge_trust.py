"""Knowledge trust: signed, hash-chained events (``knowledge_events.key_id``/``signature``), and the root-signed
key certificates, key revocations and log checkpoints (append-only tables).

What must be re-signed after this upgrade: nothing in the stored patches, reviews or publications (their signatures
and bytes are unchanged). What is new is that verifiers trust keys only through certificates signed by a pinned root
key, and events only when signed or covered by a root-signed checkpoint. Events written before this revision are
unsigned: run ``assay knowledge trust init --root-key ROOT.key`` once, which certifies the registered keys and seals
the existing log with a checkpoint; until then ``verify`` reports the first unsigned event.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

NEW_TABLES = ('knowledge_certificates', 'knowledge_revocations', 'knowledge_checkpoints')


def _append_only(dialect: str, table: str) -> list[str]:
    # frozen copy of assay.knowledge.models.append_only_ddl at this revision (knowledge_append_only() is from 0003)
    if dialect == 'sqlite':
        return [f"CREATE TRIGGER IF NOT EXISTS {table}_no_{o.lower()} BEFORE {o} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END" for o in ('UPDATE', 'DELETE')]
    if dialect == 'postgresql':
        return [f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION knowledge_append_only()"]
    return []


def upgrade() -> None:
    op.add_column('knowledge_events', sa.Column('key_id', sa.String(length=16), nullable=True))
    op.add_column('knowledge_events', sa.Column('signature', sa.String(length=128), nullable=True))
    op.add_column('knowledge_events', sa.Column('entry_hash', sa.String(length=64), nullable=True))
    for table in ('knowledge_certificates', 'knowledge_revocations'):
        op.create_table(table,
                        sa.Column('id', sa.Integer(), nullable=False),
                        sa.Column('key_id', sa.String(length=16), nullable=False),
                        sa.Column('document', sa.Text(), nullable=False),
                        sa.Column('created_at', sa.Float(), nullable=False),
                        sa.PrimaryKeyConstraint('id'))
        op.create_index(f'ix_{table}_key_id', table, ['key_id'], unique=False)
    op.create_table('knowledge_checkpoints',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('seq', sa.Integer(), nullable=False),
                    sa.Column('document', sa.Text(), nullable=False),
                    sa.Column('created_at', sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    dialect = op.get_bind().dialect.name
    for table in NEW_TABLES:
        for stmt in _append_only(dialect, table):
            op.execute(sa.text(stmt))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in NEW_TABLES:
        if dialect == 'sqlite':
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))
        op.drop_table(table)
    with op.batch_alter_table('knowledge_events', schema=None) as batch_op:
        batch_op.drop_column('entry_hash')
        batch_op.drop_column('signature')
        batch_op.drop_column('key_id')
