# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Connection options shared by the thinkus.ops backup modules.

    Each fragment documents one argument spec of plugins/module_utils:
    DOCUMENTATION is ``_s3_store.s3_argument_spec()``, POSTGRES is
    ``_pg_backup.postgres_argument_spec()`` and REDIS is ``_redis_backup.redis_argument_spec()``.
    """

    # The bucket every backup module reads or writes.
    DOCUMENTATION = r"""
options:
  bucket:
    description: Name of the bucket.
    type: str
    required: true
  prefix:
    description: Folder in the bucket under which backups are kept (C(<prefix>/<kind>/<id>/)).
    type: str
    default: ""
  endpoint_url:
    description:
      - S3 API endpoint (R2 - C(https://<account>.r2.cloudflarestorage.com)). Default AWS S3.
      - Falls back to E(AWS_ENDPOINT_URL_S3) or E(AWS_ENDPOINT_URL).
    type: str
  region:
    description: Signing region; V(auto) for R2. Falls back to E(AWS_REGION).
    type: str
    default: auto
  access_key:
    description: Access key id. Falls back to E(AWS_ACCESS_KEY_ID).
    type: str
  secret_key:
    description: Secret access key. Never logged. Falls back to E(AWS_SECRET_ACCESS_KEY).
    type: str
"""

    # How a module reaches PostgreSQL. postgres_database is documented by each module, because
    # it names a different database in each (the source, the restore target, the maintenance one).
    POSTGRES = r"""
options:
  postgres_url:
    description:
      - Connection URL C(postgresql://user:password@host:port/database?sslmode=require). Never logged;
        the password is taken out of it before any tool sees it.
      - What the URL gives wins; O(postgres_host), O(postgres_port), O(postgres_user), O(postgres_password),
        O(postgres_sslmode) and the database option (and their E(PG*) fallbacks) only fill in what it lacks.
        Its query parameters (C(sslmode), C(sslrootcert), C(options), ...) are passed to libpq as they are.
    type: str
  postgres_host:
    description: Host of the PostgreSQL server. Falls back to E(PGHOST).
    type: str
  postgres_port:
    description: Port of the PostgreSQL server. Falls back to E(PGPORT).
    type: int
  postgres_user:
    description: User to connect as. Falls back to E(PGUSER).
    type: str
  postgres_password:
    description: Password. Never logged. Falls back to E(PGPASSWORD).
    type: str
  postgres_sslmode:
    description: libpq C(sslmode).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
"""

    # How a module reaches Redis.
    REDIS = r"""
options:
  redis_url:
    description:
      - Connection URL C(rediss://user:password@host:port) (TLS) or C(redis://...). Never logged; the password
        reaches C(redis-cli) through E(REDISCLI_AUTH), never its command line. Falls back to
        E(THINKUS_BACKUP_REDIS_URL).
      - What the URL gives wins; O(redis_host), O(redis_port), O(redis_username), O(redis_password) and
        O(redis_tls) only fill in what it lacks.
    type: str
  redis_tls:
    description: Connect with TLS (implied by a C(rediss://) URL). The certificate and host name are always verified.
    type: bool
    default: false
  redis_tls_ca_file:
    description: CA bundle that signed the server's certificate; the system's trusted CAs when not set.
    type: path
  redis_host:
    description: Host of the Redis server.
    type: str
    default: 127.0.0.1
  redis_port:
    description: Port of the Redis server.
    type: int
    default: 6379
  redis_username:
    description: ACL user name, when the server uses ACL users.
    type: str
  redis_password:
    description: Password. Never logged. Falls back to E(REDISCLI_AUTH).
    type: str
"""
