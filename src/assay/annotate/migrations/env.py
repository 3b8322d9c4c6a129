"""Alembic environment: runs migrations on the engine handed over by ``assay.annotate.db`` (no alembic.ini)."""

from alembic import context

from assay.annotate.models import Base
import assay.knowledge.models  # noqa: E402,F401  (the knowledge tables live in this schema too)
import assay.knowledge.network_models  # noqa: E402,F401  (the expert network tables, revision 0004)

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from assay.annotate.db import Database

        engine = Database(config.get_main_option("sqlalchemy.url")).write_engine
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
