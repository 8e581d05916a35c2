"""A real Kubernetes control plane with simulated nodes for the local environment.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes
on loopback; kwok plays the kubelet for three fake nodes, so Deployments roll out for
real (scheduling, ReplicaSets, readiness, RBAC) without containers. The binaries are
built from the Go modules pinned in tools/k8s and tools/kwok into the persistent cache
(``ctx.cache_dir``) once per version; certificates, etcd data and kubeconfigs live in
``ctx.state_dir`` and survive ``down`` so the next ``up`` is warm.

Standalone: ``python -m tools.localenv.k8s up|down|reset|status`` from the repository root.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tools.localenv._proc import (
    Context,
    LocalEnvError,
    cmdline_differs,
    run,
    run_with_progress,
    say,
    spawn,
    stop,
    tracked_pid,
    wait_for,
)

NAME = "kubernetes"

TOOLS = Path(__file__).resolve().parents[1]
K8S_MODULE = TOOLS / "k8s"
KWOK_MODULE = TOOLS / "kwok"
ETCD_MODULE = TOOLS / "etcd"
STAGES_DIR = KWOK_MODULE / "stages"

HOST = "127.0.0.1"
APISERVER_PORT = 6443
# Not etcd's default 2379/2380: a distribution's own etcd service may hold those.
ETCD_CLIENT_PORT = 12379
ETCD_PEER_PORT = 12380
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259
KWOK_PORT = 10247
SERVER = f"https://{HOST}:{APISERVER_PORT}"
SERVICE_CIDR = "10.96.0.0/12"
SERVICE_IP = "10.96.0.1"
# The real node's address (its pod bridge's gateway, tools/localenv/node.py): the API server
# advertises it, so the in-cluster `kubernetes` Service leads pods to the API server.
NODE_ADDRESS = "10.244.0.1"

# Start order; ``down`` stops them in reverse.
ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, KWOK = (
    "k8s-etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, KWOK)

# The control plane, kubectl, and the real node's kubelet and kube-proxy (tools/localenv/node.py):
# one module, one version.
K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy")
# Wall clock on a 2-core machine with an empty Go cache, for the progress message; the
# first command pays for most of the shared packages.
COLD_BUILD_MINUTES = {
    "kube-apiserver": 5,
    "kube-controller-manager": 3,
    "kube-scheduler": 1,
    "kubectl": 1,
    "kubelet": 1,
    "kube-proxy": 1,
    "kwok": 1,
    "etcd": 1,
    "coredns": 5,
    "pause": 1,
    "metrics-server": 5,
    "kube-state-metrics": 1,
    "prometheus-config-reloader": 2,
    "prometheus": 3,
    "traefik": 8,
    "pebble": 1,
    "pebble-challtestsrv": 1,
    "cert-manager-controller": 5,
    "acmesolver": 1,
}

# Downloading a module's dependencies into an empty module cache.
COLD_DOWNLOAD_MINUTES = {
    "kubernetes": 2,
    "kwok": 0,
    "etcd": 0,
    "coredns": 2,
    "cluster-metrics": 1,
    "traefik": 2,
    "pebble": 0,
    "cert-manager": 1,
    "config-reloader": 1,
    "prometheus": 1,
}

NODE_NAMES = tuple(f"kwok-node-{i}" for i in range(3))
NODE_RESOURCES = {"cpu": "32", "memory": "256Gi", "pods": "110"}
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")


# --------------------------------------------------------------------------- build


def _module_version(module_dir: Path, module: str) -> str:
    """The version of ``module`` that ``module_dir``/go.mod requires."""
    text = (module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise LocalEnvError(f"{module_dir / 'go.mod'} does not require {module}")
    return match.group(1)


def k8s_version() -> str:
    return _module_version(K8S_MODULE, "k8s.io/kubernetes")


def kwok_version() -> str:
    return _module_version(KWOK_MODULE, "sigs.k8s.io/kwok")


def etcd_version() -> str:
    return _module_version(ETCD_MODULE, "go.etcd.io/etcd/server/v3")


def _go() -> str:
    go = shutil.which("go")
    if not go and os.environ.get("GOROOT"):
        candidate = Path(os.environ["GOROOT"]) / "bin" / "go"
        go = str(candidate) if candidate.exists() else None
    if not go:
        raise LocalEnvError(
            "kubernetes: the Go toolchain (go >= 1.26) is not on PATH; install it to build the "
            "control plane, or point KUBECONFIG at an existing cluster"
        )
    return go


def _go_env(ctx: Context) -> dict[str, str]:
    gocache = ctx.cache_dir / "go"
    goflags = " ".join(filter(None, [os.environ.get("GOFLAGS", ""), "-modcacherw"]))
    return {
        "GOMODCACHE": str(gocache / "mod"),
        "GOCACHE": str(gocache / "build"),
        "GOPATH": str(gocache / "path"),
        "CGO_ENABLED": "0",
        "GOFLAGS": goflags,
        "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local"),
    }


def _release_date(ctx: Context, go: str, module_dir: Path, module: str) -> str:
    """The publication time of ``module`` (a reproducible buildDate)."""
    out = run([go, "list", "-m", "-json", module], env=_go_env(ctx), cwd=module_dir, quiet=True).stdout
    stamp = json.loads(out).get("Time", "1970-01-01T00:00:00Z")
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).strftime("%Y-%m-%dT%H:%M:%SZ")


def _k8s_ldflags(version: str, build_date: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        # The module proxy carries no commit id; name the exact module version instead.
        "gitCommit": f"module:k8s.io/kubernetes@{version}",
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{key}={value}" for key, value in values.items()]
    return " ".join(flags)


def _stamp(module_dir: Path, go_version: str) -> str:
    """What a module's binaries are built from: the Go version, go.mod, go.sum and our own .go files (any depth)."""
    digest = hashlib.sha256(go_version.encode())
    for path in sorted([module_dir / "go.mod", module_dir / "go.sum", *module_dir.rglob("*.go")]):
        if path.exists():
            digest.update(str(path.relative_to(module_dir)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Module:
    directory: Path
    label: str
    version: str
    commands: dict[str, str]  # binary name -> Go package
    ldflags: str = "-s -w"  # the Kubernetes module's are computed (version stamps)


def _build_module(ctx: Context, go: str, mod: _Module) -> dict[str, Path]:
    out_dir = ctx.cache_dir / "bin" / f"{mod.label}-{mod.version}"
    bins = {name: out_dir / name for name in mod.commands}
    go_version = run([go, "env", "GOVERSION"], env=_go_env(ctx), quiet=True).stdout.decode().strip()
    stamp_file = out_dir / ".stamp"
    want = _stamp(mod.directory, go_version)
    if _is_built(ctx, mod, go_version):
        return bins
    out_dir.mkdir(parents=True, exist_ok=True)
    if (mod.directory / "go.sum").exists():  # a module with dependencies
        started = time.monotonic()
        cold = max(COLD_DOWNLOAD_MINUTES.get(mod.label, 1), 1)
        say(f"downloading the Go modules of {mod.label} {mod.version} (into an empty module cache: <{cold} min)")
        run_with_progress(
            [go, "mod", "download", "-x"],
            f"downloading {mod.label} modules",
            env=_go_env(ctx),
            cwd=mod.directory,
            unit="download steps",
        )
        say(f"modules of {mod.label} ready in {time.monotonic() - started:.0f}s")
    ldflags = mod.ldflags
    if mod.label == "kubernetes":
        ldflags = _k8s_ldflags(mod.version, _release_date(ctx, go, mod.directory, "k8s.io/kubernetes"))
    for name, package in mod.commands.items():
        say(
            f"building {name} {mod.version} (cold build on 2 cores: ~{COLD_BUILD_MINUTES.get(name, 3)} min, "
            f"later ones reuse the Go cache)"
        )
        started = time.monotonic()
        run_with_progress(
            [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(bins[name]), package],
            f"building {name}",
            env=_go_env(ctx),
            cwd=mod.directory,
            unit="packages compiled",
        )
        say(f"built {name} in {time.monotonic() - started:.0f}s")
    stamp_file.write_text(want + "\n")
    return bins


def build_modules(ctx: Context, mods: Sequence[_Module]) -> dict[str, Path]:
    """Build (or reuse from the cache) each module's binaries, in order; one cold-build notice first."""
    go = _go()
    _announce_cold_build(ctx, go, mods)
    bins: dict[str, Path] = {}
    for mod in mods:
        bins.update(_build_module(ctx, go, mod))
    return bins


def build(ctx: Context) -> dict[str, Path]:
    """Build (or reuse from the cache) every binary the control plane needs."""
    ctx.ensure()
    kube = _Module(
        K8S_MODULE, "kubernetes", k8s_version(), {name: f"k8s.io/kubernetes/cmd/{name}" for name in K8S_COMMANDS}
    )
    kwok = _Module(KWOK_MODULE, "kwok", kwok_version(), {"kwok": "sigs.k8s.io/kwok/cmd/kwok"})
    # Not Debian's etcd-server: tools/etcd/go.mod says why 3.4 does not do.
    etcd = _Module(ETCD_MODULE, "etcd", etcd_version(), {"etcd": "."})
    return build_modules(ctx, (kube, kwok, etcd))


def _announce_cold_build(ctx: Context, go: str, mods: Sequence[_Module]) -> None:
    """Before a first build on this machine, say how long all of it takes here (2 cores)."""
    go_version = run([go, "env", "GOVERSION"], env=_go_env(ctx), quiet=True).stdout.decode().strip()
    todo = [m for m in mods if not _is_built(ctx, m, go_version)]
    if not todo:
        return
    minutes = sum(COLD_DOWNLOAD_MINUTES.get(m.label, 0) for m in todo)
    minutes += sum(COLD_BUILD_MINUTES.get(name, 3) for m in todo for name in m.commands)
    say(
        f"building {', '.join(m.label for m in todo)} from Go modules: with empty Go caches this takes about "
        f"{minutes} min on a 2-core machine (progress every 30s); later runs reuse the caches"
    )


def _is_built(ctx: Context, mod: _Module, go_version: str) -> bool:
    out_dir = ctx.cache_dir / "bin" / f"{mod.label}-{mod.version}"
    stamp_file = out_dir / ".stamp"
    return (
        all((out_dir / name).exists() for name in mod.commands)
        and stamp_file.exists()
        and stamp_file.read_text().strip() == _stamp(mod.directory, go_version)
    )


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class _Cert:
    name: str
    common_name: str
    issuer: str = "ca"
    orgs: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    server: bool = False
    client: bool = False


LOCAL_NAMES = ("localhost",)
APISERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
CERTS = (
    _Cert("apiserver", "kube-apiserver", dns=APISERVER_NAMES, ips=(HOST, SERVICE_IP, NODE_ADDRESS), server=True),
    _Cert("etcd-server", "k8s-etcd", issuer="etcd-ca", dns=LOCAL_NAMES, ips=(HOST,), server=True, client=True),
    _Cert("apiserver-etcd-client", "kube-apiserver-etcd-client", issuer="etcd-ca", client=True),
    _Cert("admin", "thinkus-admin", orgs=("system:masters",), client=True),
    _Cert("kube-controller-manager", "system:kube-controller-manager", client=True),
    _Cert("kube-scheduler", "system:kube-scheduler", client=True),
    # kwok writes the status of every node and pod it manages, as a kubelet would for all of them.
    _Cert("kwok", "kwok", orgs=("system:masters",), client=True),
    # The real node (tools/localenv/node.py): the kubelet as the Node authorizer expects it,
    # kube-proxy as the default RBAC's system:node-proxier subject, CoreDNS with a read-only role,
    # and the API server's own client certificate for the kubelet (logs, exec, port-forward).
    _Cert("kubelet", "system:node:thinkus-node-0", orgs=("system:nodes",), client=True),
    _Cert("kube-proxy", "system:kube-proxy", client=True),
    _Cert("coredns", "thinkus-local:coredns", client=True),
    _Cert("apiserver-kubelet-client", "kube-apiserver-kubelet-client", orgs=("system:masters",), client=True),
    # The aggregation layer (metrics.k8s.io, tools/localenv/metrics.py): the API server proxies
    # to extension API servers with this certificate, which they trust through their own CA.
    _Cert("front-proxy-client", "front-proxy-client", issuer="front-proxy-ca", client=True),
)
CERT_DAYS = 365
CA_DAYS = 3650
RENEW_BEFORE = dt.timedelta(days=30)


def k8s_dir(ctx: Context) -> Path:
    return ctx.state_dir / "k8s"


def pki_dir(ctx: Context) -> Path:
    return k8s_dir(ctx) / "pki"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` mode 0600, leaving an identical file alone (kube-state-metrics, for one,
    restarts its servers whenever its kubeconfig is written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_bytes() == data and (path.stat().st_mode & 0o777) == 0o600:
            return
    except OSError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise LocalEnvError(f"kubernetes: {path} is not an EC private key; delete {path.parent} to regenerate")
    return key


def _still_valid(path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE


def _name(common_name: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ensure_ca(pki: Path, name: str, common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key_path = pki / f"{name}.crt", pki / f"{name}.key"
    if _still_valid(crt) and key_path.exists():
        return x509.load_pem_x509_certificate(crt.read_bytes()), _load_key(key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # Everything signed by an old CA is now worthless: force re-issue.
    for spec in CERTS:
        if spec.issuer == name:
            (pki / f"{spec.name}.crt").unlink(missing_ok=True)
    return cert, key


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signing only: a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(pki: Path, spec: _Cert, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
    crt, key_path = pki / f"{spec.name}.crt", pki / f"{spec.name}.key"
    if _still_valid(crt) and key_path.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [
        u
        for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, spec.server), (ExtendedKeyUsageOID.CLIENT_AUTH, spec.client))
        if on
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, spec.orgs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(key_path, _key_pem(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ensure_service_account_key(pki: Path) -> None:
    key_path, pub_path = pki / "sa.key", pki / "sa.pub"
    if key_path.exists() and pub_path.exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(key_path, _key_pem(key))
    pub_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def ensure_pki(ctx: Context) -> Path:
    """CA, serving and client certificates, and the service-account key pair (kept across runs)."""
    pki = pki_dir(ctx)
    for d in (k8s_dir(ctx), pki):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    cas = {
        "ca": _ensure_ca(pki, "ca", "thinkus-local-kubernetes-ca"),
        "etcd-ca": _ensure_ca(pki, "etcd-ca", "thinkus-local-etcd-ca"),
        "front-proxy-ca": _ensure_ca(pki, "front-proxy-ca", "thinkus-local-front-proxy-ca"),
    }
    for spec in CERTS:
        _issue(pki, spec, *cas[spec.issuer])
    _ensure_service_account_key(pki)
    return pki


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_kubeconfig(path: Path, pki: Path, user: str) -> Path:
    """A kubeconfig (JSON is valid YAML) with the CA and the client certificate ``user`` embedded."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "thinkus-local", "cluster": {"server": SERVER, "certificate-authority-data": _b64(pki / "ca.crt")}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pki / f"{user}.crt"),
                    "client-key-data": _b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "thinkus-local", "context": {"cluster": "thinkus-local", "user": user}}],
        "current-context": "thinkus-local",
    }
    _write_private(path, (json.dumps(config, indent=2) + "\n").encode())
    return path


def admin_kubeconfig(ctx: Context) -> Path:
    return ctx.state_dir / "kubeconfig"


def _component_kubeconfig(ctx: Context, user: str) -> Path:
    return k8s_dir(ctx) / f"{user}.kubeconfig"


# --------------------------------------------------------------------------- API access


def _tls(ctx: Context, ca: str = "ca.crt", cert: str = "admin") -> ssl.SSLContext:
    pki = pki_dir(ctx)
    context = ssl.create_default_context(cafile=str(pki / ca))
    context.load_cert_chain(str(pki / f"{cert}.crt"), str(pki / f"{cert}.key"))
    return context


def _insecure_tls() -> ssl.SSLContext:
    """Only for liveness probes of self-signed local endpoints; no credentials are sent."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _get(url: str, context: ssl.SSLContext, timeout: float = 3.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class _AdminConnection(threading.local):
    """A kept-alive HTTPS connection to our API server as the local admin, one per thread.

    A no-op ``make local-up`` applies about thirty objects; a TLS handshake and a fresh SSL
    context (the key and certificates read again) per request were most of that step's time.
    The context is rebuilt when the PKI files change (``ensure_pki`` renews them), and a
    request on a kept connection that fails (the server closed it between requests) is sent once
    more on a new one."""

    conn: http.client.HTTPSConnection | None = None
    key: tuple[object, ...] = ()

    def request(
        self, ctx: Context, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        pki = pki_dir(ctx)
        key = tuple((f, (pki / f).stat().st_mtime_ns) for f in ("ca.crt", "admin.crt", "admin.key"))
        if self.conn is not None and key != self.key:
            self.close()
        for attempt in range(2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(HOST, APISERVER_PORT, context=_tls(ctx), timeout=10)
                self.key = key
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                # A kept connection the server closed (it restarted, or timed it out) fails in one of
                # several ways (reset, EOF in TLS, an empty status line): once more on a new one.
                self.close()
                if attempt or not reused:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


_ADMIN = _AdminConnection()


def api(
    ctx: Context,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    """One call to our API server as the local admin; returns (status, decoded JSON)."""
    data = json.dumps(body).encode() if body is not None else None
    status, raw = _ADMIN.request(ctx, method, path, data, {"Content-Type": content_type})
    return status, json.loads(raw or b"{}")


def apply(ctx: Context, path: str, body: dict[str, Any], component: str = NAME) -> None:
    """Server-side apply ``body`` at ``path`` (the object's own URL) as the field manager thinkus-local."""
    status, raw = _ADMIN.request(
        ctx,
        "PATCH",
        f"{path}?fieldManager=thinkus-local&force=true",
        json.dumps(body).encode(),
        {"Content-Type": "application/apply-patch+yaml"},
    )
    if status >= 400:
        why = json.loads(raw or b"{}").get("message")
        raise LocalEnvError(f"{component}: applying {body['kind']} {path} failed ({status}): {why}")


def rbac(kind: str, name: str, **spec: Any) -> tuple[str, dict[str, Any]]:
    namespace, labels = spec.pop("namespace", None), spec.pop("labels", None)
    body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name}, **spec}
    if labels:
        body["metadata"]["labels"] = labels
    plural = kind.lower() + "s"
    if namespace:
        body["metadata"]["namespace"] = namespace
        return f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{plural}/{name}", body
    return f"/apis/rbac.authorization.k8s.io/v1/{plural}/{name}", body


def user_subjects(name: str) -> list[dict[str, str]]:
    return [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}]


def _ok(url: str, context: ssl.SSLContext) -> bool:
    """A health endpoint answers 200 with "ok" (Kubernetes components) or {"health":"true",...} (etcd)."""
    status, body = _get(url, context)
    return status == 200 and (body.strip() == b"ok" or b'"health":"true"' in body)


# --------------------------------------------------------------------------- external cluster


def _kubeconfig_server(path: Path) -> str | None:
    """The server of the current context; PyYAML when present (it ships with Ansible), else the first server."""
    text = path.read_text()
    try:
        import yaml

        doc = yaml.safe_load(text) or {}
        current = next(c["context"] for c in doc.get("contexts", []) if c["name"] == doc.get("current-context"))
        return next(c["cluster"]["server"] for c in doc.get("clusters", []) if c["name"] == current["cluster"])
    except Exception:
        match = re.search(r"^\s*\"?server\"?\s*:\s*\"?([^\s\",]+)", text, re.MULTILINE)
        return match.group(1) if match else None


def external_kubeconfig(ctx: Context) -> tuple[Path, str, str] | None:
    """A reachable cluster named by THINKUS_KUBECONFIG or KUBECONFIG (not our own): (path, server, version)."""
    own = admin_kubeconfig(ctx).resolve()
    for var in ("THINKUS_KUBECONFIG", "KUBECONFIG"):
        for entry in filter(None, os.environ.get(var, "").split(os.pathsep)):
            path = Path(entry).expanduser()
            if not path.is_file() or path.resolve() == own:
                continue
            server = _kubeconfig_server(path)
            version = _probe(server) if server else None
            if server and version is not None:
                return path, server, version
    return None


def beside_cluster_status(ctx: Context, processes: Sequence[str]) -> tuple[bool, str] | None:
    """The first answer of a component that runs processes beside the local cluster: not used
    with a cluster of the user's own, down when a process is missing; None to go on checking."""
    if external_kubeconfig(ctx):
        return True, "not used (external cluster)"
    missing = [name for name in processes if not tracked_pid(ctx, name)]
    if missing:
        return False, f"not running: {', '.join(missing)}"
    return None


def _probe(server: str) -> str | None:
    """The version a server reports ("" when it wants credentials for that), None when unreachable."""
    try:
        status, body = _get(server.rstrip("/") + "/version", _insecure_tls())
    except (OSError, ValueError):
        return None
    if status == 200:
        try:
            return str(json.loads(body).get("gitVersion", ""))
        except ValueError:
            return ""
    return "" if status in (401, 403) else None


# --------------------------------------------------------------------------- components


def _etcd_argv(ctx: Context, etcd: Path) -> list[str]:
    pki = pki_dir(ctx)
    client, peer = f"https://{HOST}:{ETCD_CLIENT_PORT}", f"http://{HOST}:{ETCD_PEER_PORT}"
    return [
        str(etcd),
        "--name=thinkus-local",
        f"--data-dir={k8s_dir(ctx) / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=thinkus-local={peer}",
        f"--cert-file={pki / 'etcd-server.crt'}",
        f"--key-file={pki / 'etcd-server.key'}",
        f"--trusted-ca-file={pki / 'etcd-ca.crt'}",
        "--client-cert-auth=true",
        "--quota-backend-bytes=2147483648",
    ]


def _apiserver_argv(ctx: Context, binary: Path) -> list[str]:
    pki = pki_dir(ctx)
    return [
        str(binary),
        # Every address, not only the loopback: pods reach the API server through the
        # `kubernetes` Service, whose endpoint is the advertised node address (the lease
        # endpoint reconciler keeps it). Clients on this machine keep using the loopback.
        "--bind-address=0.0.0.0",
        f"--advertise-address={NODE_ADDRESS}",
        f"--secure-port={APISERVER_PORT}",
        f"--etcd-servers=https://{HOST}:{ETCD_CLIENT_PORT}",
        f"--etcd-cafile={pki / 'etcd-ca.crt'}",
        f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}",
        f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=lease",
        "--allow-privileged=true",
        "--profiling=false",
        # kubectl logs/exec on the real node: the kubelet is reached at its InternalIP.
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        # The aggregation layer: requests to metrics.k8s.io go to metrics-server's endpoint
        # (the node address) with the front-proxy client certificate and the user in headers.
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        "--enable-aggregator-routing=true",
    ]


def _controller_manager_argv(ctx: Context, binary: Path) -> list[str]:
    pki, kubeconfig = pki_dir(ctx), _component_kubeconfig(ctx, "kube-controller-manager")
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={CONTROLLER_MANAGER_PORT}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Every default controller; no cloud provider is configured, so none of the cloud ones run.
        "--controllers=*",
        "--leader-elect=false",
        "--profiling=false",
    ]


def _scheduler_argv(ctx: Context, binary: Path) -> list[str]:
    kubeconfig = _component_kubeconfig(ctx, "kube-scheduler")
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={SCHEDULER_PORT}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def _kwok_argv(ctx: Context, binary: Path) -> list[str]:
    stages = sorted(STAGES_DIR.glob("*.yaml"))
    if not stages:
        raise LocalEnvError(f"kwok: no Stage files in {STAGES_DIR}")
    key, value = KWOK_NODE_ANNOTATION
    return [
        str(binary),
        f"--kubeconfig={_component_kubeconfig(ctx, 'kwok')}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={key}={value}",
        f"--server-address={HOST}:{KWOK_PORT}",
        *(f"--config={stage}" for stage in stages),
    ]


def _start(
    ctx: Context,
    name: str,
    argv: Sequence[str],
    ports: Sequence[int],
    health: str,
    context: ssl.SSLContext,
    timeout: float,
) -> None:
    pid = tracked_pid(ctx, name)
    if pid and cmdline_differs(pid, argv):
        say(f"{name}: its command line changed (a newer checkout), restarting it")
        stop(ctx, name)
        pid = None
    running = pid is not None
    spawn(ctx, name, argv, ports=() if running else ports)
    if not running:
        say(f"started {name}")
    wait_for(ctx, name, lambda: _ok(health, context), timeout=timeout)


def _node(name: str) -> dict[str, Any]:
    key, value = KWOK_NODE_ANNOTATION
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "spec": {},
        "status": {"allocatable": dict(NODE_RESOURCES), "capacity": dict(NODE_RESOURCES)},
    }


def _ensure_nodes(ctx: Context) -> None:
    for name in NODE_NAMES:
        status, body = api(ctx, "POST", "/api/v1/nodes", _node(name))
        if status not in (201, 409):
            raise LocalEnvError(f"kubernetes: creating node {name} failed ({status}): {body.get('message')}")


def _ready_nodes(ctx: Context) -> int:
    status, body = api(ctx, "GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
    if status != 200:
        return 0
    return sum(
        1
        for node in body.get("items", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))
    )


def up(ctx: Context) -> dict[str, str]:
    """Bring the control plane up (or reuse the cluster KUBECONFIG points at); idempotent."""
    external = external_kubeconfig(ctx)
    if external:
        path, server, version = external
        say(f"using the existing cluster {server} from {path} (unset KUBECONFIG/THINKUS_KUBECONFIG for a local one)")
        return _endpoints(path, server, version, external=True)
    ctx.ensure()
    bins = build(ctx)
    pki = ensure_pki(ctx)
    for user in ("kube-controller-manager", "kube-scheduler", "kwok"):
        _write_kubeconfig(_component_kubeconfig(ctx, user), pki, user)
    kubeconfig = _write_kubeconfig(admin_kubeconfig(ctx), pki, "admin")
    (k8s_dir(ctx) / "etcd").mkdir(mode=0o700, exist_ok=True)

    _start(
        ctx,
        ETCD,
        _etcd_argv(ctx, bins["etcd"]),
        [ETCD_CLIENT_PORT, ETCD_PEER_PORT],
        f"https://{HOST}:{ETCD_CLIENT_PORT}/health",
        _tls(ctx, "etcd-ca.crt", "apiserver-etcd-client"),
        60,
    )
    _start(
        ctx,
        APISERVER,
        _apiserver_argv(ctx, bins["kube-apiserver"]),
        [APISERVER_PORT],
        f"{SERVER}/readyz",
        _tls(ctx),
        180,
    )
    _start(
        ctx,
        CONTROLLER_MANAGER,
        _controller_manager_argv(ctx, bins["kube-controller-manager"]),
        [CONTROLLER_MANAGER_PORT],
        f"https://{HOST}:{CONTROLLER_MANAGER_PORT}/healthz",
        _insecure_tls(),
        90,
    )
    _start(
        ctx,
        SCHEDULER,
        _scheduler_argv(ctx, bins["kube-scheduler"]),
        [SCHEDULER_PORT],
        f"https://{HOST}:{SCHEDULER_PORT}/healthz",
        _insecure_tls(),
        90,
    )
    _start(
        ctx, KWOK, _kwok_argv(ctx, bins["kwok"]), [KWOK_PORT], f"http://{HOST}:{KWOK_PORT}/healthz", _insecure_tls(), 60
    )
    _ensure_nodes(ctx)
    wait_for(ctx, KWOK, lambda: _ready_nodes(ctx) == len(NODE_NAMES), timeout=60)
    version = _server_version(ctx)
    say(f"kubernetes {version} is up at {SERVER} with {len(NODE_NAMES)} kwok nodes (kubeconfig: {kubeconfig})")
    return _endpoints(kubeconfig, SERVER, version or "", external=False)


def _endpoints(kubeconfig: Path, server: str, version: str, *, external: bool) -> dict[str, str]:
    """What ``up`` reports; prefixed keys because the local environment merges every component's into one file."""
    return {
        "kubeconfig": str(kubeconfig),
        "k8s_server": server,
        "k8s_version": version,
        "k8s_external": str(external),
    }


def _server_version(ctx: Context) -> str | None:
    status, body = api(ctx, "GET", "/version")
    return body.get("gitVersion") if status == 200 else None


def status(ctx: Context) -> tuple[bool, str]:
    """(up?, where): our control plane, or the external cluster KUBECONFIG points at."""
    external = external_kubeconfig(ctx)
    if external:
        path, server, version = external
        return True, f"{server} {version} (external, {path})"
    missing = [name for name in COMPONENTS if not tracked_pid(ctx, name)]
    if missing:
        return False, f"not running: {', '.join(missing)}"
    try:
        ready = _ok(f"{SERVER}/readyz", _tls(ctx))
    except OSError as err:
        return False, f"{SERVER} not reachable: {err}"
    return (True, f"{SERVER} ({_server_version(ctx)})") if ready else (False, f"{SERVER} is not ready")


def down(ctx: Context) -> None:
    """Stop our processes, newest first; certificates and etcd data stay for a warm restart."""
    for name in reversed(COMPONENTS):
        if stop(ctx, name):
            say(f"stopped {name}")


def reset(ctx: Context) -> dict[str, str]:
    """Restart our control plane with an empty etcd: a cluster with nothing of ours in it.

    The certificates stay (clients keep trusting the API server); every object goes,
    namespaces, CRDs and nodes included, exactly as on a brand-new machine.
    """
    if external_kubeconfig(ctx):
        raise LocalEnvError(
            "kubernetes: KUBECONFIG/THINKUS_KUBECONFIG points at a cluster this project did not start; "
            "refusing to reset it (unset them to reset the local one)"
        )
    down(ctx)
    data = k8s_dir(ctx) / "etcd"
    if data.exists():
        shutil.rmtree(data)
        say(f"removed etcd data {data}")
    return up(ctx)


def main(argv: Sequence[str]) -> int:
    ctx = Context()
    command = argv[0] if argv else "status"
    if command == "up":
        print(json.dumps(up(ctx)))
    elif command == "down":
        down(ctx)
    elif command == "reset":
        print(json.dumps(reset(ctx)))
    elif command == "status":
        ok, where = status(ctx)
        print(f"{NAME}: {'up' if ok else 'down'} - {where}")
        return 0 if ok else 1
    else:
        print("usage: python -m tools.localenv.k8s up|down|reset|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except LocalEnvError as err:
        print(f"local-env: {err}", file=sys.stderr)
        sys.exit(1)
