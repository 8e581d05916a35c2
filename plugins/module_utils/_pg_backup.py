# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private PostgreSQL helpers of the thinkus.ops backup modules.

Logical backups with ``pg_dump`` (custom or directory format) that work with nothing but a
connection URL, as managed databases (Supabase, Neon) give. The password never reaches a
command line: it is removed from the URL and handed to the tools as ``PGPASSWORD``.

The content fingerprint (row count per table, schema hash) is taken in the very snapshot
``pg_dump`` dumps (``pg_export_snapshot`` + ``pg_dump --snapshot``), while it runs, so it
describes exactly what is in the dump and costs no extra wall time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ansible.module_utils.basic import env_fallback

from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import (
    BackupError,
    assert_no_secret,
    run_tool,
    scrub,
)

try:
    import psycopg2
    import psycopg2.errors
    import psycopg2.extensions
    from psycopg2 import sql

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = exc

_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema')"
_USER_SCHEMA_FILTER = (
    f"n.nspname NOT IN {_SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
)
_NOT_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {catalog}::regclass AND d.objid = {oid} "
    "AND d.deptype = 'e')"
)

_NOT_EXT_CLASS = _NOT_EXTENSION.format(catalog="'pg_class'", oid="c.oid")

TABLES_SQL = f"""
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {_USER_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}
ORDER BY 1, 2
"""  # noqa: S608 - constant SQL, no input in it

USER_OBJECTS_SQL = f"""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMA_FILTER} AND {_NOT_EXT_CLASS}"""  # noqa: S608

# What the schema hash covers: columns (order, type, nullability, default), constraints,
# indexes, views and functions of user schemas. Owners and privileges are left out so a
# restore with --no-owner into another server hashes the same.
SCHEMA_SQL = [  # constant SQL built from the filters above, no input in it
    f"""SELECT 'column', n.nspname, c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod),
        a.attnotnull::text, coalesce(pg_get_expr(ad.adbin, ad.adrelid), '')
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
      WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_SCHEMA_FILTER}
        AND {_NOT_EXT_CLASS}
      ORDER BY n.nspname, c.relname, a.attnum""",  # noqa: S608
    f"""SELECT 'constraint', n.nspname, cl.relname, co.conname, pg_get_constraintdef(co.oid)
      FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
      WHERE {_USER_SCHEMA_FILTER} AND {_NOT_EXTENSION.format(catalog="'pg_class'", oid="cl.oid")}
      ORDER BY 2, 3, 4""",  # noqa: S608
    f"""SELECT 'index', n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE {_USER_SCHEMA_FILTER} AND {_NOT_EXTENSION.format(catalog="'pg_class'", oid="i.indrelid")}
      ORDER BY 2, 3""",  # noqa: S608
    f"""SELECT 'view', n.nspname, c.relname, pg_get_viewdef(c.oid)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('v', 'm') AND {_USER_SCHEMA_FILTER}
        AND {_NOT_EXT_CLASS}
      ORDER BY 2, 3""",  # noqa: S608
    f"""SELECT 'function', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE {_USER_SCHEMA_FILTER} AND {_NOT_EXTENSION.format(catalog="'pg_proc'", oid="p.oid")}
      ORDER BY 2, 3, 4""",  # noqa: S608
]


def postgres_argument_spec(prefix: str = "postgres_", env: bool = True) -> dict[str, Any]:
    """Connection options (documented in each module); with ``env`` they fall back to libpq's variables."""

    def fb(name: str) -> dict[str, Any]:
        return {"fallback": (env_fallback, [name])} if env else {}

    return {
        prefix + "url": dict(type="str", no_log=True),
        prefix + "host": dict(type="str", **fb("PGHOST")),
        prefix + "port": dict(type="int", **fb("PGPORT")),
        prefix + "user": dict(type="str", **fb("PGUSER")),
        prefix + "password": dict(type="str", no_log=True, **fb("PGPASSWORD")),
        prefix + "database": dict(type="str", **fb("PGDATABASE")),
        prefix + "sslmode": dict(
            type="str", choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
        ),
    }


@dataclass
class PgConn:
    """Where a database is, without its password in any string that leaves the process."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    database: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)  # sslmode and other libpq URL parameters

    @classmethod
    def from_params(cls, params: Mapping[str, Any], prefix: str = "postgres_") -> PgConn:
        """The connection a module's options describe.

        A URL is taken as given: its host, port, user, password, database and query
        parameters (``sslmode`` and any other libpq keyword) all win. The explicit options
        (and their ``PG*`` environment fallbacks) only fill in what the URL lacks, so a role
        default such as ``port=5432`` can never redirect ``postgresql://...@db:6543/app``.
        """
        url = params.get(prefix + "url")
        conn = cls.from_url(url) if url else cls()
        for name in ("host", "port", "user", "database", "password"):
            if getattr(conn, name) in (None, "") and params.get(prefix + name) not in (None, ""):
                setattr(conn, name, params[prefix + name])
        if params.get(prefix + "sslmode") and "sslmode" not in conn.options:
            conn.options["sslmode"] = params[prefix + "sslmode"]
        return conn

    @property
    def configured(self) -> bool:
        return bool(self.host or self.database or self.options)

    @classmethod
    def from_url(cls, url: str) -> PgConn:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise BackupError("url must look like postgresql://user:password@host:port/database")
        try:
            port = parts.port
        except ValueError as exc:
            raise BackupError("url has an invalid port") from exc
        return cls(
            host=unquote(parts.hostname) if parts.hostname else None,
            port=port,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            database=unquote(parts.path.lstrip("/")) or None,
            options=dict(parse_qsl(parts.query)),
        )

    def with_database(self, database: str) -> PgConn:
        return PgConn(self.host, self.port, self.user, database, self.password, dict(self.options))

    def conninfo(self) -> str:
        """A libpq keyword/value string WITHOUT the password, safe for a command line."""
        pairs = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.database, **self.options}
        pairs.pop("password", None)
        return " ".join(f"{k}={_quote(str(v))}" for k, v in pairs.items() if v not in (None, ""))

    def env(self) -> dict[str, str]:
        env = {"PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "thinkus-backup"}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def describe(self) -> dict[str, Any]:
        """For manifests and reports: no password, no URL."""
        return {"host": self.host, "port": self.port, "database": self.database, "user": self.user}

    def connect(self) -> Any:
        if not HAS_PSYCOPG2:
            raise BackupError(f"psycopg2 is required: {PSYCOPG2_IMPORT_ERROR}")
        try:
            return psycopg2.connect(
                self.conninfo(), password=self.password, connect_timeout=10, application_name="thinkus-backup"
            )
        except psycopg2.OperationalError as exc:
            raise BackupError(
                f"cannot connect to PostgreSQL at {self.host}:{self.port} database {self.database!r} "
                f"as {self.user!r}: {scrub(str(exc), [self.password])}"
            ) from exc


def _quote(value: str) -> str:
    if value and all(ch.isalnum() or ch in "._-/:" for ch in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------- fingerprint


def fingerprint(cursor: Any) -> dict[str, Any]:
    """Row count per table and a schema hash, read through ``cursor`` (in its snapshot)."""
    cursor.execute(TABLES_SQL)
    tables: dict[str, int] = {}
    for schema, name in cursor.fetchall():
        cursor.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        tables[f"{schema}.{name}"] = int(cursor.fetchone()[0])
    rows: list[list[str]] = []
    for query in SCHEMA_SQL:
        cursor.execute(query)
        rows.extend([str(v) for v in row] for row in cursor.fetchall())
    schema_hash = hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()
    return {"tables": tables, "schema_hash": schema_hash, "schema_objects": len(rows)}


def live_fingerprint(conn: PgConn) -> dict[str, Any]:
    db = conn.connect()
    try:
        db.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with db.cursor() as cur:
            return fingerprint(cur)
    finally:
        db.close()


def server_version(conn: PgConn) -> str:
    db = conn.connect()
    try:
        with db.cursor() as cur:
            cur.execute("SHOW server_version")
            return str(cur.fetchone()[0])
    finally:
        db.close()


# --------------------------------------------------------------------------- dump and restore


def dump_argv(conn: PgConn, out: str, fmt: str, jobs: int, snapshot: str | None, compress: int | None) -> list[str]:
    argv = ["pg_dump", "--no-password", f"--format={fmt}", f"--file={out}", f"--dbname={conn.conninfo()}"]
    if fmt == "directory" and jobs > 1:
        argv.append(f"--jobs={jobs}")
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    if compress is not None:
        argv.append(f"--compress={compress}")
    return argv


def lost_during_dump(exc: Exception, conn: PgConn) -> BackupError:
    """The fingerprint session failed mid-dump: the server restarted, failed over or dropped us."""
    cause = " ".join(str(exc).split())
    return BackupError(
        f"PostgreSQL at {conn.host}:{conn.port} failed during the dump of {conn.database!r} (restarted, failed "
        f"over, or the connection was lost): {scrub(cause, [conn.password])}; nothing of this run was uploaded"
    )


def dump(conn: PgConn, out: str, fmt: str = "custom", jobs: int = 1, compress: int | None = None) -> dict[str, Any]:
    """Run pg_dump into ``out`` and fingerprint the same snapshot meanwhile; returns the fingerprint."""
    db = conn.connect()
    try:
        db.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        cur = db.cursor()
        # The row counts run beside pg_dump: one backend for them, not a parallel scan that takes
        # every core from the dump (it measured 13 % slower on 2 cores with parallel workers).
        cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        snapshot: str | None
        try:
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = str(cur.fetchone()[0])
        except psycopg2.Error:
            # Poolers in transaction mode cannot share snapshots: fingerprint separately.
            db.rollback()
            snapshot = None
        argv = dump_argv(conn, out, fmt, jobs, snapshot, compress)
        assert_no_secret(argv, [conn.password])
        env = dict(os.environ)
        env.update(conn.env())
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if snapshot:
                fp = fingerprint(cur)
            _out, err = proc.communicate()
        except psycopg2.Error as exc:
            proc.kill()
            proc.wait()
            raise lost_during_dump(exc, conn) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            raise BackupError(f"pg_dump failed (exit {proc.returncode}): {scrub(err, [conn.password])}")
        try:
            if not snapshot:
                fp = fingerprint(cur)
            fp["consistent_snapshot"] = bool(snapshot)
            db.commit()
        except psycopg2.Error as exc:
            raise lost_during_dump(exc, conn) from None
        return fp
    finally:
        db.close()


def restore_argv(conn: PgConn, path: str, jobs: int, clean: bool, no_owner: bool) -> list[str]:
    argv = ["pg_restore", "--no-password", "--exit-on-error", f"--dbname={conn.conninfo()}"]
    if jobs > 1:
        argv.append(f"--jobs={jobs}")
    if clean:
        argv += ["--clean", "--if-exists"]
    if no_owner:
        argv += ["--no-owner", "--no-privileges"]
    argv.append(path)
    return argv


def restore(conn: PgConn, path: str, jobs: int = 1, clean: bool = False, no_owner: bool = True) -> float:
    """pg_restore ``path`` into ``conn``'s database; returns the seconds it took."""
    start = time.monotonic()
    run_tool(restore_argv(conn, path, jobs, clean, no_owner), env=conn.env(), secrets_=[conn.password])
    return time.monotonic() - start


def user_table_count(conn: PgConn) -> int:
    db = conn.connect()
    try:
        with db.cursor() as cur:
            cur.execute(USER_OBJECTS_SQL)
            return int(cur.fetchone()[0])
    finally:
        db.close()


def database_exists(conn: PgConn, name: str) -> bool:
    db = conn.connect()
    try:
        with db.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        db.close()


def create_database(conn: PgConn, name: str) -> None:
    db = conn.connect()
    db.autocommit = True
    try:
        with db.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg2.Error as exc:
        raise BackupError(f"cannot create database {name!r}: {str(exc).strip()}") from exc
    finally:
        db.close()


def drop_database(conn: PgConn, name: str, attempts: int = 5) -> None:
    """Drop a database, ending the sessions still in it.

    WITH (FORCE) refuses when a session in it belongs to a role ours may not signal: an autovacuum
    worker that a large restore started, typically. A plain DROP DATABASE ends autovacuum workers
    itself, and fails only while another session stays: tried again a few times, a second apart.
    """
    db = conn.connect()
    db.autocommit = True
    try:
        with db.cursor() as cur:
            try:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                return
            except psycopg2.errors.InsufficientPrivilege:
                pass
            for attempt in range(attempts):
                try:
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                    return
                except psycopg2.errors.ObjectInUse:
                    if attempt == attempts - 1:
                        raise
                    time.sleep(1)
    finally:
        db.close()
