"""Knowledge layer: domains (quorum), domain roles, registered keys, patch versions, reviews, publications and the
change feed; the history tables refuse UPDATE and DELETE (triggers).

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# frozen copy of assay.knowledge.models.append_only_ddl at this revision (a migration must not change with the code)
APPEND_ONLY_TABLES = ('knowledge_patches', 'knowledge_reviews', 'knowledge_publications', 'knowledge_events')


def append_only_ddl(table: str, dialect: str) -> list[str]:
    if dialect == 'sqlite':
        return [f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op_.lower()} BEFORE {op_} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END" for op_ in ('UPDATE', 'DELETE')]
    if dialect == 'postgresql':
        return [
            "CREATE OR REPLACE FUNCTION knowledge_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only'; END $$",
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION knowledge_append_only()",
        ]
    return []


def drop_append_only_ddl(table: str, dialect: str) -> list[str]:
    if dialect == 'sqlite':
        return [f"DROP TRIGGER IF EXISTS {table}_no_{op_}" for op_ in ('update', 'delete')]
    if dialect == 'postgresql':
        return [f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"]
    return []


def upgrade() -> None:
    op.create_table('knowledge_domains',
    sa.Column('domain', sa.String(length=64), nullable=False),
    sa.Column('quorum', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('domain')
    )
    op.create_table('knowledge_roles',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('domain', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('granted_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'domain', 'role')
    )
    with op.batch_alter_table('knowledge_roles', schema=None) as batch_op:
        batch_op.create_index('ix_knowledge_roles_domain', ['domain', 'role'], unique=False)

    op.create_table('knowledge_keys',
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key_id')
    )
    with op.batch_alter_table('knowledge_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_knowledge_keys_user_id'), ['user_id'], unique=False)

    op.create_table('knowledge_patches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patch_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('patch_id', 'version', name='uq_knowledge_patches_version')
    )
    with op.batch_alter_table('knowledge_patches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_knowledge_patches_author_id'), ['author_id'], unique=False)

    op.create_table('knowledge_reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patch_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('reviewer_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['patch_id', 'version'], ['knowledge_patches.patch_id', 'knowledge_patches.version'],
                            name='fk_knowledge_reviews_patch'),
    sa.ForeignKeyConstraint(['reviewer_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('patch_id', 'version', 'reviewer_id', 'kind', name='uq_knowledge_reviews_reviewer')
    )
    with op.batch_alter_table('knowledge_reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_knowledge_reviews_reviewer_id'), ['reviewer_id'], unique=False)

    op.create_table('knowledge_publications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patch_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('publisher_id', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('published_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['patch_id', 'version'], ['knowledge_patches.patch_id', 'knowledge_patches.version'],
                            name='fk_knowledge_publications_patch'),
    sa.ForeignKeyConstraint(['publisher_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('patch_id', 'version', name='uq_knowledge_publications_version')
    )
    with op.batch_alter_table('knowledge_publications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_knowledge_publications_publisher_id'), ['publisher_id'], unique=False)

    op.create_table('knowledge_events',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('patch_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('event', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['patch_id', 'version'], ['knowledge_patches.patch_id', 'knowledge_patches.version'],
                            name='fk_knowledge_events_patch'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('knowledge_events', schema=None) as batch_op:
        batch_op.create_index('ix_knowledge_events_version', ['patch_id', 'version', 'seq'], unique=False)

    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY_TABLES:
        for stmt in append_only_ddl(table, dialect):
            op.execute(sa.text(stmt))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY_TABLES:
        for stmt in drop_append_only_ddl(table, dialect):
            op.execute(sa.text(stmt))
    for table in ('knowledge_events', 'knowledge_publications', 'knowledge_reviews', 'knowledge_patches',
                  'knowledge_keys', 'knowledge_roles', 'knowledge_domains'):
        op.drop_table(table)
    if dialect == 'postgresql':
        op.execute(sa.text('DROP FUNCTION IF EXISTS knowledge_append_only()'))
