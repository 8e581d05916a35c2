# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark thinkus.ops backups against the plain tools, side by side in one run.

    .venv/bin/python tools/bench_backup.py            # pgbench scale 10 (~150 MB)
    .venv/bin/python tools/bench_backup.py --scale 70  # ~1 GB, the issue's target

Against the local environment (make local-up): a scratch database
``thinkus_backup_bench_<hex>`` filled by ``pgbench -i``, a bucket prefix
``bench-backup/<hex>/``; both removed at the end. Rounds alternate plain/ours.

- backup: ``pg_dump -Fc`` to a local file  vs  the backup_run flow (pg_dump in the
  fingerprint's snapshot, row counts + schema hash, SHA-256, verified upload, manifest).
  Target: ratio <= 1.15.
- restore: ``createdb`` + ``pg_restore``  vs  restore_verify (download + checksum,
  scratch database, pg_restore, fingerprint, compare, drop): its RTO and overhead.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".collections")]

import psycopg2  # noqa: E402

from ansible_collections.thinkus.ops.plugins.module_utils import _pg_backup as pg  # noqa: E402
from ansible_collections.thinkus.ops.plugins.module_utils._backup_common import compare_postgres, failed_names  # noqa: E402
from ansible_collections.thinkus.ops.plugins.module_utils._backup_ops import (  # noqa: E402
    BackupRequest,
    WorkDir,
    fetch_objects,
    postgres_dump_path,
    resolve_backup,
    restore_postgres_scratch,
    run_backup,
)
from ansible_collections.thinkus.ops.plugins.module_utils._s3_store import S3Store  # noqa: E402
from tools import benchlib  # noqa: E402
from tools.localenv import _secrets  # noqa: E402
from tools.localenv._proc import Context  # noqa: E402

HOST, PORT, BUCKET, ENDPOINT = "127.0.0.1", 15432, "thinkus-backups", "http://127.0.0.1:19000"


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.monotonic()
    out = fn(*args, **kwargs)
    return time.monotonic() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (1 = 100k accounts, ~15 MB)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of plain and ours")
    benchlib.add_json_argument(parser)
    args = parser.parse_args()

    creds = _secrets.load(Context())
    tag = secrets.token_hex(4)
    db = f"thinkus_backup_bench_{tag}"
    prefix = f"bench-backup/{tag}"
    env = dict(os.environ, PGPASSWORD=creds["postgres_password"])
    conn = pg.PgConn(HOST, PORT, creds["postgres_user"], db, creds["postgres_password"])
    admin = conn.with_database("thinkus")
    store = S3Store(
        {
            "bucket": BUCKET,
            "endpoint_url": ENDPOINT,
            "region": "auto",
            "access_key": creds["s3_access_key"],
            "secret_key": creds["s3_secret_key"],
        }
    )
    pg.create_database(admin, db)
    try:
        t_init, _init = timed(
            subprocess.run,
            ["pgbench", "-i", "-q", "-s", str(args.scale), "-h", HOST, "-p", str(PORT), "-U", conn.user, db],
            env=env,
            check=True,
            capture_output=True,
        )
        with psycopg2.connect(conn.conninfo(), password=conn.password) as c, c.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            size = cur.fetchone()[0]
        print(f"database {db}: pgbench scale {args.scale}, {size / 1e6:.0f} MB (filled in {t_init:.1f}s)")

        plain_backup, ours_backup, dump_sizes = [], [], []
        with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
            for _round in range(args.rounds):
                out = os.path.join(tmp, "plain.dump")
                t, _dump = timed(
                    subprocess.run,
                    ["pg_dump", "--no-password", "-Fc", "-f", out, f"--dbname={conn.conninfo()}"],
                    env=env,
                    check=True,
                )
                plain_backup.append(t)
                dump_sizes.append(os.path.getsize(out))
                os.unlink(out)
                with WorkDir(tmp) as work:
                    req = BackupRequest(kind="full", prefix=prefix, postgres=conn)
                    t, manifest = timed(run_backup, req, store, work)
                ours_backup.append(t)
        print(f"dump size {dump_sizes[0] / 1e6:.1f} MB; backup manifest {manifest['id']}, timings {req.timings}")

        plain_restore, ours_rto = [], []
        for i in range(args.rounds):
            with WorkDir() as work:
                t_dl, (sums, paths) = timed(fetch_objects, store, resolve_backup(store, prefix, None, "full"), work)
                scratch = f"thinkus_backup_bench_{tag}_p{i}"
                pg.create_database(admin, scratch)
                t, _restored = timed(pg.restore, conn.with_database(scratch), postgres_dump_path(paths, work), 2)
                pg.drop_database(admin, scratch)
                plain_restore.append(t)
            with WorkDir() as work:
                start = time.monotonic()
                m = resolve_backup(store, prefix, None, "full")
                sums, paths = fetch_objects(store, m, work)
                _sec, actual = restore_postgres_scratch(
                    admin, postgres_dump_path(paths, work), f"thinkus_backup_bench_{tag}_v{i}", 2, pg.live_fingerprint
                )
                checks = sums + compare_postgres(m["fingerprint"]["postgres"], actual)
                ours_rto.append(time.monotonic() - start)
                assert not failed_names(checks), failed_names(checks)

        pb, ob = statistics.median(plain_backup), statistics.median(ours_backup)
        pr, orto = statistics.median(plain_restore), statistics.median(ours_rto)
        print(
            f"backup : plain pg_dump -Fc {pb:7.2f}s | thinkus.ops backup_run {ob:7.2f}s | ratio {ob / pb:.3f} "
            f"(target <= 1.15) rounds plain={[round(x, 2) for x in plain_backup]} "
            f"ours={[round(x, 2) for x in ours_backup]}"
        )
        print(
            f"restore: plain pg_restore -j2 {pr:7.2f}s | restore_verify RTO {orto:7.2f}s | overhead {orto - pr:+.2f}s "
            f"(x{orto / pr:.2f}); download of the dump {t_dl:.2f}s"
        )
        size_label = f"{size / 1e9:.1f} GB" if size >= 5e8 else f"{size / 1e6:.0f} MB"
        benchlib.write(
            args.json,
            [
                benchlib.row(
                    f"backup_run of a {size_label} database (dump, fingerprint, checksum, upload, manifest)",
                    ours_backup,
                    "`pg_dump -Fc` to a local file",
                    plain_backup,
                    max_ratio=1.15,
                ),
                benchlib.row(
                    "restore_verify of that backup (download, restore, fingerprint, compare)",
                    ours_rto,
                    "`createdb` + `pg_restore -j2` of the same dump",
                    plain_restore,
                    max_ratio=1.3,
                ),
            ],
        )
        return 0
    finally:
        pg.drop_database(admin, db)
        store.delete_keys(store.list_keys(prefix + "/"))


if __name__ == "__main__":
    sys.exit(main())
