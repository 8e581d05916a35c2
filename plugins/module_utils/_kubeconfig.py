# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A kubeconfig (or in-cluster service account) turned into one HTTPS connection to the API server.

Not a public API: the leading underscore means other collections must not import it.

Only the standard library: importing the ``kubernetes`` package costs about half a second
on every module call, more than a whole no-op request. What this file reads is what
kubectl reads for a context:

- the cluster: ``server``, ``certificate-authority`` / ``-data``, ``insecure-skip-tls-verify``,
  ``tls-server-name``;
- the user: ``client-certificate`` / ``-data`` with ``client-key`` / ``-data``, ``token``,
  ``tokenFile``, ``username`` / ``password``, and an ``exec`` credential plugin
  (client.authentication.k8s.io ExecCredential: a token or a client certificate);
- several files in one path list (``a:b``), merged the way kubectl merges them (first wins);
- relative file names, relative to the kubeconfig that names them.

What it does not read (a legacy ``auth-provider``, a cluster ``proxy-url``) makes ``load``
return ``Unsupported``: the caller then uses the ``kubernetes`` package, which does.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import json
import os
import select
import socket
import ssl
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

UTC = datetime.timezone.utc  # noqa: UP017 - modules also run on Python < 3.11
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
EXEC_TIMEOUT = 60


class KubeconfigError(Exception):
    """The kubeconfig cannot be used as written; the message names the file and the field."""


class Unsupported(Exception):
    """The kubeconfig uses something this reader leaves to the kubernetes package."""


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except (ValueError, TypeError) as exc:
        raise KubeconfigError(f"{what} is not base64: {exc}") from None


@dataclass
class Credentials:
    """What goes with every request: a header, or a client certificate in the TLS context."""

    authorization: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    expires: datetime.datetime | None = None  # exec credentials: fetch again after this

    def expired(self) -> bool:
        return self.expires is not None and datetime.datetime.now(UTC) >= self.expires


@dataclass
class Endpoint:
    """One API server and how to talk to it."""

    server: str
    context: str
    kubeconfig: str | None
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    credentials: Credentials = field(default_factory=Credentials)
    token_file: str | None = None
    exec_spec: dict[str, Any] | None = None

    def ssl_context(self) -> ssl.SSLContext:
        # A cluster CA replaces the system's roots, as in client-go (and loading those roots
        # is most of the cost of a context); without one, the system's roots are used.
        if not self.insecure and (self.ca_data is not None or self.ca_file):
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        else:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.ca_data is not None:
            context.load_verify_locations(cadata=self.ca_data.decode("ascii", errors="replace"))
        elif self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        creds = self.credentials
        if creds.cert_pem and creds.key_pem:
            _load_cert_chain(context, creds.cert_pem, creds.key_pem)
        return context

    def authorization(self) -> str | None:
        """The Authorization header now: a token file is read again, exec credentials renewed."""
        if self.exec_spec is not None and (self.credentials.expired() or not self._has_exec_credentials()):
            self.credentials = run_exec_plugin(self.exec_spec, self.kubeconfig)
        if self.token_file:
            try:
                with open(self.token_file, encoding="utf-8") as handle:
                    return "Bearer " + handle.read().strip()
            except OSError as exc:
                raise KubeconfigError(f"cannot read the token file {self.token_file}: {exc.strerror}") from None
        return self.credentials.authorization

    def _has_exec_credentials(self) -> bool:
        creds = self.credentials
        return bool(creds.authorization or (creds.cert_pem and creds.key_pem))


def _load_cert_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """ssl loads a client certificate from files only: a private directory, removed at once."""
    directory = tempfile.mkdtemp(prefix="thinkus-k8s-")
    try:
        os.chmod(directory, 0o700)
        cert_path, key_path = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_path, key_path)
    finally:
        for name in ("tls.crt", "tls.key"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml  # the controller has it loaded already; a module needs it only here

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig {path} is not YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a mapping")
    return data


def _merged(paths: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The kubeconfig files merged as kubectl does (first occurrence of a name wins), and the
    file each cluster and user came from (relative file names are relative to it)."""
    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current-context": None}
    origin: dict[str, str] = {}
    for path in paths:
        data = _read_yaml(path)
        if merged["current-context"] is None and data.get("current-context"):
            merged["current-context"] = data["current-context"]
        for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in data.get(section) or []:
                if not isinstance(entry, dict) or not entry.get("name"):
                    raise KubeconfigError(f"kubeconfig {path}: every entry of {section} needs a name")
                name = str(entry["name"])
                if name not in merged[section]:
                    merged[section][name] = entry.get(key) or {}
                    origin[f"{section}/{name}"] = path
    return merged, origin


def context_names(kubeconfig: str) -> tuple[list[str], str | None]:
    """The contexts a kubeconfig (path list) defines, and its current context."""
    merged, _origin = _merged(_paths(kubeconfig))
    return list(merged["contexts"]), merged["current-context"]


def _paths(kubeconfig: str) -> list[str]:
    paths = [p for p in kubeconfig.split(os.pathsep) if p]
    existing = [p for p in paths if os.path.isfile(p)]
    if not existing:
        raise KubeconfigError(f"kubeconfig {kubeconfig} does not exist")
    return existing


def _relative(path: str | None, base_file: str) -> str | None:
    if not path:
        return None
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(os.path.abspath(base_file)), path)


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise KubeconfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def load(kubeconfig: str, context: str | None) -> Endpoint:
    """The endpoint of ``context`` (default: the current context) in ``kubeconfig``."""
    merged, origin = _merged(_paths(kubeconfig))
    names = list(merged["contexts"])
    if context:
        if context not in merged["contexts"]:
            raise KubeconfigError(f"context {context!r} is not in kubeconfig {kubeconfig} (it has: {names})")
    else:
        context = merged["current-context"]
        if not context:
            raise KubeconfigError(f"kubeconfig {kubeconfig} has no current-context; set the context option")
        if context not in merged["contexts"]:
            raise KubeconfigError(f"kubeconfig {kubeconfig}: its current-context {context!r} is not defined")
    ctx = merged["contexts"][context]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in merged["clusters"]:
        raise KubeconfigError(
            f"kubeconfig {kubeconfig}: context {context!r} names cluster {cluster_name!r}, not defined"
        )
    cluster = merged["clusters"][cluster_name]
    cluster_file = origin[f"clusters/{cluster_name}"]
    user: dict[str, Any] = merged["users"].get(user_name) or {} if user_name else {}
    user_file = origin.get(f"users/{user_name}", cluster_file)
    if cluster.get("proxy-url") or user.get("auth-provider"):
        raise Unsupported("proxy-url" if cluster.get("proxy-url") else "auth-provider")
    server = str(cluster.get("server") or "")
    if not server.startswith(("https://", "http://")):
        raise KubeconfigError(
            f"kubeconfig {kubeconfig}: cluster {cluster_name!r} needs a server https://host[:port], got {server!r}"
        )
    endpoint = Endpoint(
        server=server.rstrip("/"),
        context=str(context),
        kubeconfig=kubeconfig,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
    )
    if cluster.get("certificate-authority-data"):
        endpoint.ca_data = _b64(
            cluster["certificate-authority-data"], f"cluster {cluster_name!r} certificate-authority-data"
        )
    elif cluster.get("certificate-authority"):
        endpoint.ca_file = _relative(cluster["certificate-authority"], cluster_file)
    creds = Credentials()
    if user.get("client-certificate-data"):
        creds.cert_pem = _b64(user["client-certificate-data"], f"user {user_name!r} client-certificate-data")
    elif user.get("client-certificate"):
        creds.cert_pem = _read_file(_relative(user["client-certificate"], user_file) or "", "client certificate")
    if user.get("client-key-data"):
        creds.key_pem = _b64(user["client-key-data"], f"user {user_name!r} client-key-data")
    elif user.get("client-key"):
        creds.key_pem = _read_file(_relative(user["client-key"], user_file) or "", "client key")
    if user.get("token"):
        creds.authorization = f"Bearer {user['token']}"
    elif user.get("tokenFile"):
        endpoint.token_file = _relative(user["tokenFile"], user_file)
    elif user.get("username") and user.get("password") is not None:
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        creds.authorization = f"Basic {basic}"
    if user.get("exec"):
        endpoint.exec_spec = dict(user["exec"], _cluster=cluster, _base=user_file)
    endpoint.credentials = creds
    return endpoint


def in_cluster() -> Endpoint:
    """The pod's own service account, as every in-cluster client reads it."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise KubeconfigError("not in a cluster: KUBERNETES_SERVICE_HOST is not set")
    if ":" in host:
        host = f"[{host}]"
    return Endpoint(
        server=f"https://{host}:{port}",
        context="in-cluster",
        kubeconfig=None,
        ca_file=os.path.join(SERVICE_ACCOUNT, "ca.crt"),
        token_file=os.path.join(SERVICE_ACCOUNT, "token"),
    )


def run_exec_plugin(spec: dict[str, Any], kubeconfig: str | None) -> Credentials:
    """Run a client-go credential plugin; its ExecCredential gives a token or a client certificate."""
    command = spec.get("command")
    if not command:
        raise KubeconfigError(f"kubeconfig {kubeconfig}: the user's exec plugin has no command")
    if spec.get("interactiveMode") == "Always":
        raise KubeconfigError(
            f"kubeconfig {kubeconfig}: the exec plugin {command} wants a terminal (interactiveMode Always)"
        )
    base = spec.get("_base") or kubeconfig or "."
    if os.sep in str(command) and not os.path.isabs(str(command)):
        command = _relative(str(command), base)
    api_version = spec.get("apiVersion") or "client.authentication.k8s.io/v1"
    env = dict(os.environ)
    for item in spec.get("env") or []:
        env[str(item.get("name"))] = str(item.get("value", ""))
    exec_info: dict[str, Any] = {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    if spec.get("provideClusterInfo"):
        cluster = spec.get("_cluster") or {}
        exec_info["spec"]["cluster"] = {
            k: v
            for k, v in {
                "server": cluster.get("server"),
                "certificate-authority-data": cluster.get("certificate-authority-data"),
                "insecure-skip-tls-verify": cluster.get("insecure-skip-tls-verify"),
                "tls-server-name": cluster.get("tls-server-name"),
            }.items()
            if v is not None
        }
    env["KUBERNETES_EXEC_INFO"] = json.dumps(exec_info)
    argv = [str(command), *[str(a) for a in spec.get("args") or []]]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, timeout=EXEC_TIMEOUT, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KubeconfigError(f"the kubeconfig's exec plugin {argv[0]} could not run: {exc}") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise KubeconfigError(
            f"the kubeconfig's exec plugin {argv[0]} failed (exit {done.returncode}): {tail[0][:300]}"
        )
    try:
        status = json.loads(done.stdout)["status"]
    except (ValueError, KeyError, TypeError):
        raise KubeconfigError(
            f"the kubeconfig's exec plugin {argv[0]} did not print an ExecCredential with a status"
        ) from None
    creds = Credentials()
    if status.get("token"):
        creds.authorization = f"Bearer {status['token']}"
    if status.get("clientCertificateData") and status.get("clientKeyData"):
        creds.cert_pem = str(status["clientCertificateData"]).encode()
        creds.key_pem = str(status["clientKeyData"]).encode()
    if not creds.authorization and not creds.cert_pem:
        raise KubeconfigError(f"the kubeconfig's exec plugin {argv[0]} gave neither a token nor a client certificate")
    if status.get("expirationTimestamp"):
        text = str(status["expirationTimestamp"]).replace("Z", "+00:00")
        try:
            creds.expires = datetime.datetime.fromisoformat(text)
        except ValueError:
            creds.expires = None
    return creds


class Transport:
    """HTTP/1.1 to one API server over one kept-alive connection, opened when first needed."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        parts = urlsplit(endpoint.server)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.base_path = parts.path.rstrip("/")
        self._ssl: ssl.SSLContext | None = None
        self._ssl_cert_id: int | None = None
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None and _dropped(conn.sock):
            conn.close()
            conn = None
        if conn is None:
            if self.https:
                creds = self.endpoint.credentials
                if self._ssl is None or self._ssl_cert_id != id(creds):
                    self._ssl, self._ssl_cert_id = self.endpoint.ssl_context(), id(creds)
                conn = _HTTPSConnection(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    context=self._ssl,
                    server_name=self.endpoint.tls_server_name,
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._conn = conn
        return conn

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
        """One exchange; (status, body). Connection problems raise OSError or http.client errors."""
        authorization = self.endpoint.authorization()
        headers = dict(headers)
        if authorization:
            headers["Authorization"] = authorization
        headers.setdefault("User-Agent", "thinkus.ops")
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request(method, self.base_path + path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                # a kept-alive connection the server had just closed: a read is safe to send again
                if attempt == 1 and reused and method == "GET":
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if response.will_close:
                self.close()
            return response.status, data
        raise ConnectionResetError("connection reset")  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection was closed by the server (readable means EOF)."""
    try:
        readable, _w, _x = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS with the TLS name the kubeconfig asks for (tls-server-name) instead of the host's."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext, server_name: str | None) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls_context = context
        self._server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._tls_context.wrap_socket(sock, server_hostname=self._server_name or self.host)
