"""PostgreSQL (Debian's server binaries) with a seeded ``thinkus`` database and user."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import psycopg2

from . import _secrets
from ._proc import Context, LocalEnvError, run, say, spawn, stop, wait_for

NAME = "postgres"
HOST = "127.0.0.1"
PORT = 15432
POD_HBA_LINE = "host all all 10.244.0.0/16 scram-sha-256"
DB = "thinkus"
USER = "thinkus"


def bindir() -> Path:
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    for d in reversed(dirs):
        if int(d.parent.name) >= 15 and (d / "postgres").exists():
            return d
    raise LocalEnvError("postgres: PostgreSQL 15 or newer not found; run `make setup` (Debian's postgresql)")


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root: use the Debian ``postgres`` account then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as err:
        raise LocalEnvError("postgres: running as root needs the 'postgres' account (Debian's postgresql)") from err
    return "postgres"


def _chown(path: Path, user: str | None) -> None:
    if user:
        shutil.chown(path, user, user)


def _base(ctx: Context, user: str | None) -> Path:
    """Where the cluster lives: .local/postgres, or (when run as root) a directory the
    ``postgres`` account can reach whatever the checkout's parents allow, linked from there.

    A checkout under a 0700 home directory would otherwise lock the server out of its own
    data directory. The real directory is /var/tmp/thinkus-ops/<id of this .local>/postgres.
    """
    link = ctx.state_dir / "postgres"
    if not user:
        link.mkdir(exist_ok=True)
        return link
    key = hashlib.sha256(str(ctx.state_dir.resolve()).encode()).hexdigest()[:12]
    real = Path("/var/tmp/thinkus-ops") / key / "postgres"  # noqa: S108 - ownership checked below
    real.mkdir(parents=True, exist_ok=True)
    for d in (real.parent.parent, real.parent, real):
        st = os.lstat(d)
        if stat.S_ISLNK(st.st_mode) or st.st_uid != 0:
            raise LocalEnvError(f"postgres: {d} is not a directory owned by root; remove it and run again")
        os.chmod(d, 0o711)
    if link.is_symlink():
        if link.resolve() != real:
            link.unlink()
            link.symlink_to(real)
    elif link.is_dir():
        # an older layout kept the cluster inside .local: move it out once
        for entry in link.iterdir():
            shutil.move(str(entry), real / entry.name)
        link.rmdir()
        link.symlink_to(real)
    else:
        link.symlink_to(real)
    return real


def _connect(password: str, dbname: str = "postgres", user: str = "postgres"):
    return psycopg2.connect(host=HOST, port=PORT, user=user, password=password, dbname=dbname, connect_timeout=3)


def _initdb(data: Path, user: str | None, superpass: str) -> None:
    say("initdb for the local PostgreSQL")
    data.mkdir(parents=True, mode=0o700)
    _chown(data, user)
    with tempfile.NamedTemporaryFile("w", dir=data.parent, delete=False) as fh:
        fh.write(superpass + "\n")
        pwfile = Path(fh.name)
    try:
        os.chmod(pwfile, 0o600)
        _chown(pwfile, user)
        argv = [
            str(bindir() / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ]
        if user:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]
        run(argv, quiet=True)
    finally:
        pwfile.unlink(missing_ok=True)


def _set_superuser_password(data: Path, user: str | None, superpass: str) -> None:
    """Give the cluster's superuser this .local's password, with the server stopped.

    Single-user mode needs no login, so it works whatever password the cluster had: the one of
    a deleted .local, or of an earlier checkout at the same path. The statement goes on stdin.
    """
    argv = [str(bindir() / "postgres"), "--single", "-D", str(data), "postgres"]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]
    literal = superpass.replace("'", "''")
    run(argv, input_=f"ALTER ROLE postgres PASSWORD '{literal}'\n".encode(), quiet=True)


def _start(ctx: Context, data: Path, sock: Path, user: str | None) -> None:
    spawn(
        ctx,
        NAME,
        [
            str(bindir() / "postgres"),
            "-D",
            str(data),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"port={PORT}",
            "-c",
            f"unix_socket_directories={sock}",
            "-c",
            "max_connections=100",
            "-c",
            "fsync=on",
        ],
        ports=[PORT],
        user=user,
    )


def _wait_ready(ctx: Context, superpass: str) -> bool:
    """Wait until the server accepts connections; False when it refuses the superuser password."""
    refused: list[str] = []

    def ready() -> bool:
        try:
            _connect(superpass).close()
        except psycopg2.OperationalError as err:
            if "password authentication failed" not in str(err):
                raise
            refused.append(str(err))
        return True

    wait_for(ctx, NAME, ready, timeout=60)
    return not refused


def up(ctx: Context) -> dict[str, str]:
    ctx.ensure()
    user = _run_as()
    base = _base(ctx, user)
    data = base / "data"
    sock = base / "socket"
    superpass = _secrets.get(ctx, "postgres_superuser_password")
    password = _secrets.get(ctx, "postgres_password")
    os.chmod(base, 0o711)
    sock.mkdir(exist_ok=True)
    _chown(sock, user)
    if not (data / "PG_VERSION").exists():
        _initdb(data, user, superpass)
    _start(ctx, data, sock, user)
    if not _wait_ready(ctx, superpass):
        # The data directory outlived the .local that made it (a deleted .local, or a new
        # checkout at the same path): keep the data, take this .local's password.
        say("postgres: the data directory has another .local's superuser password; setting this one")
        down(ctx)
        _set_superuser_password(data, user, superpass)
        _start(ctx, data, sock, user)
        if not _wait_ready(ctx, superpass):
            raise LocalEnvError("postgres: the superuser password was set but is still refused; see the server log")
    conn = _connect(superpass)
    conn.autocommit = True
    with conn.cursor() as cur:
        # Pods of the real node (node.py) reach this server at the node address, forwarded to the
        # loopback: their own addresses need a password entry like the loopback's.
        hba = data / "pg_hba.conf"
        if POD_HBA_LINE not in hba.read_text():
            with hba.open("a") as fh:
                fh.write(f"# pods of the local real node (tools/localenv/node.py)\n{POD_HBA_LINE}\n")
            cur.execute("SELECT pg_reload_conf()")
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (USER,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(f"{verb} ROLE {USER} LOGIN CREATEDB PASSWORD %s", (password,))
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,))
        if not cur.fetchone():
            cur.execute(f"CREATE DATABASE {DB} OWNER {USER}")
    conn.close()
    _secrets.put(ctx, "postgres_user", USER)
    return {"postgres_host": HOST, "postgres_port": str(PORT), "postgres_db": DB}


def status(ctx: Context) -> tuple[bool, str]:
    try:
        _connect(_secrets.load(ctx).get("postgres_password", ""), DB, USER).close()
        ok = True
    except Exception:
        ok = False
    return ok, f"{HOST}:{PORT}/{DB}"


def down(ctx: Context) -> None:
    stop(ctx, NAME, timeout=30)
