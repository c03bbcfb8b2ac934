"""Migrations build the schema from empty, are idempotent, and match the tables the code uses."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from corral.store import Store
from corral.store._migrate import alembic_config
from corral.store._tables import metadata


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_migrate_from_empty_then_again(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.migrate()
        store.migrate()  # idempotent: startup runs it every time
        assert store.list_pools() == []
    finally:
        store.close()
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert {"pools", "pcs", "sessions", "alembic_version"} <= set(
                inspect(conn).get_table_names()
            )
            assert MigrationContext.configure(conn).get_current_revision() == _head()
    finally:
        engine.dispose()


def test_migrated_schema_matches_tables(store: Store) -> None:
    engine = create_engine(store.url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_concurrent_migrations_take_turns(db_url: str) -> None:
    stores = [Store(db_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def run(s: Store) -> None:
        barrier.wait()
        try:
            s.migrate()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []


def test_upgrade_names_the_entities_of_stored_policies_by_id(db_url: str) -> None:
    """Entities are ids now (issue 9): a policy stored before, naming an agent and a group by
    name, is rewritten once by the upgrade (and logged), or its forbid would match nothing."""
    from alembic import command

    from corral.domain.identity import Role
    from corral.domain.policy import ChangeKind

    store = Store(db_url)
    store.migrate()
    try:
        store.create_user("sam", roles=[Role.SPONSOR])
        bot = store.create_agent("bot", sponsors=["sam"])
        team = store.create_group("team")
        text = (
            "// by name, as written before ids\n"
            'forbid (principal == Agent::"bot", action, resource)\n'
            'when { principal in Group::"team" || principal == Agent::"gone" };'
        )
        store.add_policy("by-name", text, actor="admin")
        engine = create_engine(db_url)
        try:
            with engine.begin() as conn:
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, "0005")
        finally:
            engine.dispose()
        store.migrate()
        upgraded = store.get_policy("by-name").text
        assert upgraded == text.replace('Agent::"bot"', f'Agent::"{bot.id}"').replace(
            'Group::"team"', f'Group::"{team.id}"'
        )
        last = store.policy_changes()[-1]
        assert (last.kind, last.subject, last.actor, last.text) == (
            ChangeKind.REPLACE,
            "by-name",
            "system",
            upgraded,
        )
    finally:
        store.close()
