"""Alembic environment: runs migrations on the engine handed over by ``assay.platform.db`` (no alembic.ini).

The revisions (``versions/``) are the one chain of the shared database: users and logins, the annotation tables and
the knowledge tables. Their ids never change, so a database made by any earlier Assay upgrades in place."""

from alembic import context

from assay.platform.models import all_tables

config = context.config
target_metadata = all_tables()  # for autogenerate (the revisions themselves need no models)


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from assay.platform.db import Database

        engine = Database(config.get_main_option("sqlalchemy.url")).write_engine
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
