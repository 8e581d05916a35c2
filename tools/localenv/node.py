"""One real worker node beside the kwok nodes: kubelet, containerd, CNI, kube-proxy, CoreDNS.

The kwok nodes only pretend to run pods. This node runs them: the kubelet and kube-proxy
are built from the same ``k8s.io/kubernetes`` module as the control plane, the container
runtime is Debian's containerd with Debian's runc, pods get their network from Debian's
containernetworking-plugins (bridge, host-local, portmap, loopback), Services work through
kube-proxy (iptables) and Service names resolve through CoreDNS, built from its Go module
(``tools/coredns``) and run beside the node.

Facts of these machines that shape the set-up (docs/development.md says more):

- cgroup v1: kubelet 1.35+ refuses it unless its configuration sets ``failCgroupV1: false``;
  the cgroup driver is cgroupfs (no systemd).
- root lacks CAP_SYS_RESOURCE, so no process may lower an ``oom_score_adj`` below its own.
  The CRI asks -998 for every pod sandbox and negative values for Guaranteed and Burstable
  containers, and runc then fails with ``can't get final child's PID from pipe: EOF``.
  containerd's CRI option ``restrict_oom_score_adj`` raises every such request to
  containerd's own score (0 here), which these machines allow.
- no image can be pulled, so the sandbox ("pause") image is built here from tools/pause
  and imported into containerd's ``k8s.io`` namespace.
- the node address is the pod bridge's gateway (a non-loopback address the API server
  reaches for ``kubectl logs`` and ``exec``); CoreDNS listens there too, so pods reach it.

The node is tainted ``thinkus.ops/real-node=true:NoSchedule`` and labelled
``thinkus.ops/node=real``: only workloads that ask for it (inventories/local does, for the
platform) land here; everything else keeps landing on the kwok nodes.

Standalone: ``python -m tools.localenv.node up|down|status``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tools.localenv import k8s
from tools.localenv._proc import (
    Context,
    LocalEnvError,
    cmdline_differs,
    http_status,
    require_binary,
    run,
    say,
    spawn,
    stop,
    tracked_pid,
    wait_for,
)

NAME = "node"

TOOLS = Path(__file__).resolve().parents[1]
COREDNS_MODULE = TOOLS / "coredns"
PAUSE_MODULE = TOOLS / "pause"

NODE_NAME = "thinkus-node-0"
NODE_LABEL = ("thinkus.ops/node", "real")
NODE_TAINT = {"key": "thinkus.ops/real-node", "value": "true", "effect": "NoSchedule"}
BRIDGE = "thinkus0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = k8s.NODE_ADDRESS
CLUSTER_DNS = NODE_IP
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
# Sockets want short paths (108 bytes); containerd's runtime state belongs in /run anyway.
RUN_DIR = Path("/run/thinkus-ops")
CONTAINERD_SOCKET = RUN_DIR / "containerd.sock"
CRI_NAMESPACE = "k8s.io"
PAUSE_IMAGE = "localhost/thinkus/pause:"  # + content hash

KUBELET_HEALTHZ_PORT = 10248
KUBELET_PORT = 10250
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_METRICS_PORT = 10249
COREDNS_HEALTH_PORT = 19153
COREDNS_READY_PORT = 19181

# Storage the local environment provides, as a cluster's default StorageClass would: local
# PersistentVolumes on the real node, bound when a pod that uses the claim is scheduled.
STORAGE_CLASS = "thinkus-local"
VOLUMES = 6
VOLUME_CAPACITY = "10Gi"

CONTAINERD, KUBELET, KUBE_PROXY, COREDNS = "node-containerd", "kubelet", "kube-proxy", "coredns"
PROCESSES = (CONTAINERD, KUBELET, KUBE_PROXY, COREDNS)


def node_dir(ctx: Context) -> Path:
    return ctx.state_dir / "node"


def _ipam_dir(ctx: Context) -> Path:
    return node_dir(ctx) / "cni-ipam"


# --------------------------------------------------------------------------- build


def build(ctx: Context) -> dict[str, Path]:
    """kubelet and kube-proxy (with the control plane), CoreDNS and the pause binary."""
    go = k8s._go()
    coredns = k8s._Module(
        COREDNS_MODULE,
        "coredns",
        k8s._module_version(COREDNS_MODULE, "github.com/coredns/coredns"),
        {"coredns": "github.com/coredns/coredns"},
    )
    pause = k8s._Module(PAUSE_MODULE, "pause", "local", {"pause": "."})
    k8s._announce_cold_build(ctx, go, (coredns, pause))
    # CoreDNS's modules download while Kubernetes compiles (network beside CPU); the
    # build below then finds them in the module cache.
    prefetch = None
    go_version = run([go, "env", "GOVERSION"], env=k8s._go_env(ctx), quiet=True).stdout.decode().strip()
    if not k8s._is_built(ctx, coredns, go_version):
        prefetch = subprocess.Popen(
            [go, "mod", "download"],
            cwd=COREDNS_MODULE,
            env={**os.environ, **k8s._go_env(ctx)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        bins = k8s.build(ctx)
    finally:
        if prefetch is not None:
            prefetch.wait()  # a failed prefetch is repeated, with its errors, by the build
    for mod in (coredns, pause):
        bins.update(k8s._build_module(ctx, go, mod))
    return bins


# --------------------------------------------------------------------------- host checks


def _require_host() -> dict[str, str]:
    tools = {
        "containerd": require_binary(NAME, "containerd", "containerd"),
        "ctr": require_binary(NAME, "ctr", "containerd"),
        "runc": require_binary(NAME, "runc", "runc"),
        "iptables": require_binary(NAME, "iptables", "iptables"),
        "conntrack": require_binary(NAME, "conntrack", "conntrack"),
        "ip": require_binary(NAME, "ip", "iproute2"),
    }
    missing = [p for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).exists()]
    if missing:
        raise LocalEnvError(
            f"{NAME}: CNI plugins {', '.join(missing)} not in {CNI_BIN_DIR}; run `make setup` "
            "(Debian's containernetworking-plugins)"
        )
    if os.geteuid() != 0:
        raise LocalEnvError(f"{NAME}: a real node needs root (kubelet, containerd, iptables)")
    return tools


# --------------------------------------------------------------------------- network


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise LocalEnvError(f"{NAME}: ip {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def _ensure_bridge() -> None:
    """The pod bridge with the gateway (= node) address; the CNI bridge plugin adopts it."""
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "type", "bridge")
        say(f"created the pod bridge {BRIDGE}")
    prefix = POD_CIDR.split("/")[1]
    if f"inet {NODE_IP}/{prefix}" not in _ip("-4", "addr", "show", "dev", BRIDGE).stdout:
        _ip("addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    # Service addresses never leave this machine: until kube-proxy has written a Service's
    # rules, a packet to it goes to the pod bridge (and nowhere), not to the default route.
    _ip("route", "replace", k8s.SERVICE_CIDR, "dev", BRIDGE)
    _ensure_forwarding()
    _ensure_host_services()
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    for knob in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
        path = Path("/proc/sys") / knob
        if not path.exists():
            raise LocalEnvError(
                f"{NAME}: /proc/sys/{knob} is missing: the kernel's bridge netfilter (br_netfilter) is needed so "
                "that a pod reaching a Service on the same bridge gets its answers through kube-proxy's rules"
            )
        if path.read_text().strip() != "1":
            path.write_text("1\n")


FORWARD_CHAIN = "THINKUS-NODE-FORWARD"


def _iptables(*args: str, check: bool = True) -> bool:
    res = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise LocalEnvError(f"{NAME}: iptables {' '.join(args)} failed: {res.stderr.strip()}")
    return res.returncode == 0


def _ensure_forwarding() -> None:
    """Let packets between pods on the bridge through the host's FORWARD chain.

    With bridge netfilter on, even pod-to-pod packets on one bridge pass FORWARD, and a pod
    reaching a Service is routed through the host (DNAT by kube-proxy) and back onto the
    bridge. The Docker engine sets FORWARD's policy to DROP and accepts only its own
    bridges, so the node accepts traffic that enters and leaves its own bridge, no more.
    """
    if not _iptables("-n", "-L", FORWARD_CHAIN, check=False):
        _iptables("-N", FORWARD_CHAIN)
    rule = ("-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")
    if not _iptables("-C", FORWARD_CHAIN, *rule, check=False):
        _iptables("-A", FORWARD_CHAIN, *rule)
    jump = ("-j", FORWARD_CHAIN)
    if not _iptables("-C", "FORWARD", *jump, check=False):
        _iptables("-I", "FORWARD", "1", *jump)


def _remove_forwarding() -> None:
    while _iptables("-D", "FORWARD", "-j", FORWARD_CHAIN, check=False):
        pass
    if _iptables("-F", FORWARD_CHAIN, check=False):
        _iptables("-X", FORWARD_CHAIN, check=False)


# The local environment's loopback services that pods use, as a managed service would be used
# from a cluster: the backup CronJobs' pods reach PostgreSQL, Redis and the S3 store at the node
# address, forwarded to the loopback (kube-proxy does the same for a NodePort on localhost), and
# the in-cluster Prometheus scrapes kube-state-metrics there. This machine reaches them at the same
# address (the OUTPUT jump), so a URL works from the controller and from a pod alike, as a managed
# service's does (tests/overlays/local-platform gives the environments those URLs).
HOST_SERVICE_PORTS = {"postgres": 15432, "redis": 16379, "s3": 19000, "kube-state-metrics": 18181}
HOST_SERVICES_CHAIN = "THINKUS-NODE-HOST-SERVICES"


def _ensure_host_services() -> None:
    # a packet whose destination becomes 127.0.0.1 must be routable from the bridge
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1\n")
    if not _iptables("-t", "nat", "-n", "-L", HOST_SERVICES_CHAIN, check=False):
        _iptables("-t", "nat", "-N", HOST_SERVICES_CHAIN)
    for port in HOST_SERVICE_PORTS.values():
        rule = ("-p", "tcp", "--dport", str(port), "-j", "DNAT", "--to-destination", f"127.0.0.1:{port}")
        if not _iptables("-t", "nat", "-C", HOST_SERVICES_CHAIN, *rule, check=False):
            _iptables("-t", "nat", "-A", HOST_SERVICES_CHAIN, *rule)
    jump = ("-i", BRIDGE, "-d", NODE_IP, "-j", HOST_SERVICES_CHAIN)
    if not _iptables("-t", "nat", "-C", "PREROUTING", *jump, check=False):
        _iptables("-t", "nat", "-I", "PREROUTING", "1", *jump)
    local = ("-d", f"{NODE_IP}/32", "-j", HOST_SERVICES_CHAIN)
    if not _iptables("-t", "nat", "-C", "OUTPUT", *local, check=False):
        _iptables("-t", "nat", "-I", "OUTPUT", "1", *local)


def _remove_host_services() -> None:
    while _iptables(
        "-t", "nat", "-D", "PREROUTING", "-i", BRIDGE, "-d", NODE_IP, "-j", HOST_SERVICES_CHAIN, check=False
    ):
        pass
    while _iptables("-t", "nat", "-D", "OUTPUT", "-d", f"{NODE_IP}/32", "-j", HOST_SERVICES_CHAIN, check=False):
        pass
    if _iptables("-t", "nat", "-F", HOST_SERVICES_CHAIN, check=False):
        _iptables("-t", "nat", "-X", HOST_SERVICES_CHAIN, check=False)


def _remove_network(ctx: Context) -> None:
    _remove_forwarding()
    _remove_host_services()
    _ip("route", "del", k8s.SERVICE_CIDR, "dev", BRIDGE, check=False)
    if _ip("link", "show", BRIDGE, check=False).returncode == 0:
        _ip("link", "del", BRIDGE, check=False)
        say(f"removed the pod bridge {BRIDGE}")
    shutil.rmtree(_ipam_dir(ctx), ignore_errors=True)


def _cni_config(ctx: Context) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": "thinkus-local",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # Pods talk to each other and to this machine, never beyond it.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(_ipam_dir(ctx)),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


# --------------------------------------------------------------------------- containerd


def _containerd_config(ctx: Context, pause_ref: str) -> str:
    base = node_dir(ctx)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""# Generated by tools/localenv/node.py: containerd for the local real node only.
version = 2
root = "{base / "containerd"}"
state = "{RUN_DIR / "containerd"}"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[ttrpc]
  address = "{RUN_DIR / "containerd.sock.ttrpc"}"

[debug]
  level = "warn"

[metrics]
  address = ""

[{cri}]
  sandbox_image = "{pause_ref}"
  # root has no CAP_SYS_RESOURCE here: lower scores than containerd's own are refused
  # by the kernel, so raise them to it instead of failing every sandbox (see the module doc).
  restrict_oom_score_adj = true
  enable_selinux = false
  max_container_log_line_size = 16384

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{base / "cni"}"

[{cri}.registry]
  config_path = "{base / "certs.d"}"
"""


def _registry_hosts(ctx: Context) -> None:
    """The local registry speaks plain HTTP on loopback: tell containerd so (hosts.toml)."""
    from tools.localenv import registry

    host = f"{registry.HOST}:{registry.PORT}"
    text = f'server = "http://{host}"\n\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'

    path = node_dir(ctx) / "certs.d" / host / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _ctr(*args: str, input_: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    res = subprocess.run(
        ["ctr", "--address", str(CONTAINERD_SOCKET), "--namespace", CRI_NAMESPACE, *args],
        input=input_,
        capture_output=True,
        check=False,
        timeout=300,
    )
    if check and res.returncode != 0:
        raise LocalEnvError(f"{NAME}: ctr {' '.join(args[:3])} failed: {res.stderr.decode(errors='replace')[-800:]}")
    return res


def _containerd_answers() -> bool:
    if not CONTAINERD_SOCKET.exists():
        return False
    try:
        return _ctr("version", check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _oci_archive(binary: Path, ref: str, name: str = "pause", user: str = "65535:65535") -> bytes:
    """A one-layer OCI image archive holding ``binary`` as /``name``, run as ``user``, for ``ctr images import``."""

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.mode, info.size, info.mtime = 0o755, binary.stat().st_size, 0
        with binary.open("rb") as fh:
            tar.addfile(info, fh)
    diff_id = "sha256:" + hashlib.sha256(layer_tar.getvalue()).hexdigest()
    layer_digest, layer = blob(gzip.compress(layer_tar.getvalue(), mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [f"/{name}"], "User": user},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_digest, config_bytes = blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": len(layer)}
        ],
    }
    manifest_digest, manifest_bytes = blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        files = {
            "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
            "index.json": json.dumps(index).encode(),
            **{f"blobs/sha256/{d.split(':')[1]}": b for d, b in ((config_digest, config_bytes), (layer_digest, layer))},
            f"blobs/sha256/{manifest_digest.split(':')[1]}": manifest_bytes,
        }
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def import_binary_image(binary: Path, repository: str, name: str, user: str = "65535:65535") -> str:
    """A static ``binary`` as the image ``<repository>:<content hash>`` in the node's containerd
    (no image can be pulled here); imported once, the reference returned."""
    ref = f"{repository}:{hashlib.sha256(binary.read_bytes()).hexdigest()[:12]}"
    listed = _ctr("images", "ls", "-q").stdout.decode().split()
    if ref not in listed:
        _ctr("images", "import", "--all-platforms", "-", input_=_oci_archive(binary, ref, name, user))
        say(f"imported the image {ref} into the node's containerd")
    return ref


def _ensure_pause_image(binary: Path) -> str:
    return import_binary_image(binary, PAUSE_IMAGE.rstrip(":"), "pause")


def _our_shims() -> list[int]:
    """PIDs of containerd shims started for our socket (they outlive a killed containerd)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in text and str(CONTAINERD_SOCKET).encode() in text:
            found.append(int(cmdline.parent.name))
    return found


def _clear_leftovers(ctx: Context) -> None:
    """What a node that was killed (not stopped) leaves: pinned pod network namespaces, whose
    veths still hold pod addresses on the bridge, the runtime's mounts and state, the bridge.
    Only when no containerd of ours and none of its shims runs, so no live pod is touched."""
    if tracked_pid(ctx, CONTAINERD) or _containerd_answers() or _our_shims():
        return
    stale = list(Path("/run/netns").glob("cni-*")) if Path("/run/netns").exists() else []
    state = RUN_DIR / "containerd"
    if not stale and not state.exists():
        return
    for pinned in stale:
        subprocess.run(["umount", str(pinned)], capture_output=True, check=False)
        pinned.unlink(missing_ok=True)
    _unmount_under(RUN_DIR)
    shutil.rmtree(state, ignore_errors=True)
    _remove_network(ctx)
    say(f"cleared what a killed node left behind ({len(stale)} pod network namespaces, runtime state)")


def _start_containerd(ctx: Context, pause_binary: Path) -> str:
    base = node_dir(ctx)
    pause_ref = PAUSE_IMAGE + hashlib.sha256(pause_binary.read_bytes()).hexdigest()[:12]
    (base / "cni").mkdir(parents=True, exist_ok=True)
    cni_conf = base / "cni" / "10-thinkus.conflist"
    cni_conf.write_text(json.dumps(_cni_config(ctx), indent=2) + "\n")
    _registry_hosts(ctx)
    config = base / "containerd.toml"
    wanted = _containerd_config(ctx, pause_ref)
    if config.exists() and config.read_text() != wanted and tracked_pid(ctx, CONTAINERD):
        say("containerd configuration changed: restarting it")
        stop(ctx, CONTAINERD)
    config.write_text(wanted)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if not tracked_pid(ctx, CONTAINERD):
        if _containerd_answers():
            raise LocalEnvError(
                f"{NAME}: a containerd this project did not start answers on {CONTAINERD_SOCKET}; stop it first"
            )
        spawn(ctx, CONTAINERD, ["containerd", "--config", str(config)])
        say("started containerd for the real node")
    wait_for(ctx, CONTAINERD, _containerd_answers, timeout=60)
    return _ensure_pause_image(pause_binary)


# --------------------------------------------------------------------------- Kubernetes side


def _ensure_credentials(ctx: Context) -> dict[str, Path]:
    """Kubeconfigs of the kubelet, kube-proxy and CoreDNS, with CoreDNS's read-only RBAC."""
    pki = k8s.pki_dir(ctx)
    paths = {}
    for user in ("kubelet", "kube-proxy", "coredns"):
        paths[user] = k8s._write_kubeconfig(node_dir(ctx) / f"{user}.kubeconfig", pki, user)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "thinkus-local:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "thinkus-local:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "thinkus-local:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "thinkus-local:coredns"}],
    }
    for path, body in (
        ("/apis/rbac.authorization.k8s.io/v1/clusterroles", role),
        ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding),
    ):
        status, answer = k8s.api(ctx, "POST", path, body)
        if status not in (201, 409):
            why = answer.get("message")
            raise LocalEnvError(f"{NAME}: creating {body['kind']} for CoreDNS failed ({status}): {why}")
    return paths


def _kubelet_config(ctx: Context) -> dict[str, Any]:
    pki = k8s.pki_dir(ctx)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # These machines are cgroup v1; kubelet 1.35+ refuses it without this.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "readOnlyPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "clusterDNS": [CLUSTER_DNS],
        "resolvConf": str(node_dir(ctx) / "resolv.conf"),
        # The kubelet would lower its own score to -999, which root may not do here.
        "oomScoreAdj": 0,
        "failSwapOn": False,
        "maxPods": 60,
        "serializeImagePulls": False,
        "registerWithTaints": [NODE_TAINT],
        "imageGCHighThresholdPercent": 95,
        "imageGCLowThresholdPercent": 90,
        # A shared development disk: evict only when it is really full.
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "podPidsLimit": 4096,
        "staticPodPath": "",
        "enableServer": True,
        "serverTLSBootstrap": False,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "cpuManagerPolicy": "none",
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def _kubelet_argv(ctx: Context, binary: Path, kubeconfig: Path) -> list[str]:
    config = node_dir(ctx) / "kubelet.yaml"
    return [
        str(binary),
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={NODE_IP}",
        f"--root-dir={node_dir(ctx) / 'kubelet'}",
        f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}",
        "--v=1",
    ]


def _kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"127.0.0.1:{KUBE_PROXY_METRICS_PORT}",
        "clusterCIDR": POD_CIDR,
        # Leave the host's conntrack table size and timeouts alone (no sysctl writes).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"masqueradeAll": False, "syncPeriod": "10s", "minSyncPeriod": "1s"},
        "oomScoreAdj": 0,
    }


def _corefile(kubeconfig: Path) -> str:
    # Two server blocks on one address: the cluster's zones from the API server, and an
    # NXDOMAIN for every other name (pods have no route beyond this machine). One block with
    # both would not do: CoreDNS runs plugins in its compiled order, template before kubernetes.
    return f"""cluster.local in-addr.arpa ip6.arpa {{
    bind {CLUSTER_DNS}
    errors
    health 127.0.0.1:{COREDNS_HEALTH_PORT}
    ready 127.0.0.1:{COREDNS_READY_PORT}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} thinkus-local
        pods insecure
        ttl 5
    }}
    cache 5
    loop
}}
. {{
    bind {CLUSTER_DNS}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def _node_ready(ctx: Context) -> bool:
    status, body = k8s.api(ctx, "GET", f"/api/v1/nodes/{NODE_NAME}")
    if status != 200:
        return False
    conditions = body.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _restart_if_changed(ctx: Context, name: str, argv: Sequence[str], files: dict[Path, str]) -> None:
    """Write ``files``; restart ``name`` when one of them or its command line changed."""
    changed = False
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed = True
    pid = tracked_pid(ctx, name)
    if pid and (changed or cmdline_differs(pid, argv)):
        say(f"{name}: configuration changed, restarting")
        stop(ctx, name)


def _ensure_serving_cert(ctx: Context) -> None:
    pki = k8s.pki_dir(ctx)
    ca_cert, ca_key = k8s._ensure_ca(pki, "ca", "thinkus-local-kubernetes-ca")
    k8s._issue(
        pki,
        k8s._Cert("kubelet-serving", f"system:node:{NODE_NAME}", ips=(NODE_IP, "127.0.0.1"), server=True),
        ca_cert,
        ca_key,
    )


def _volume(name: str, path: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"thinkus.ops/local-volume": "true"}},
        "spec": {
            "capacity": {"storage": VOLUME_CAPACITY},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": "Filesystem",
            "local": {"path": str(path)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": NODE_LABEL[0], "operator": "In", "values": [NODE_LABEL[1]]}]}
                    ]
                }
            },
        },
    }


def _ensure_volumes(ctx: Context) -> int:
    """The StorageClass ``thinkus-local`` and its local PersistentVolumes on the real node.

    No provisioner: ``make local-up`` pre-creates the volumes (directories under the node's
    state), and a claim binds when the first pod that uses it is scheduled
    (WaitForFirstConsumer), so the pod and its data land on the real node. A volume whose
    claim was deleted (Released) is wiped and offered again, which is what a Delete reclaim
    policy does on a provisioner that can delete. Returns how many volumes are free.
    """
    k8s.apply(
        ctx,
        f"/apis/storage.k8s.io/v1/storageclasses/{STORAGE_CLASS}",
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        },
        NAME,
    )
    root = node_dir(ctx) / "volumes"
    free = 0
    for index in range(VOLUMES):
        name = f"{STORAGE_CLASS}-{index}"
        path = root / name
        code, current = k8s.api(ctx, "GET", f"/api/v1/persistentvolumes/{name}")
        phase = current.get("status", {}).get("phase") if code == 200 else None
        if code == 404 or phase in ("Released", "Failed"):
            # A new volume (or one given back) starts empty.
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True, mode=0o755)
            if phase:
                k8s.api(
                    ctx,
                    "PATCH",
                    f"/api/v1/persistentvolumes/{name}",
                    {"spec": {"claimRef": None}},
                    content_type="application/merge-patch+json",
                )
                say(f"volume {name} was {phase}: wiped and offered again")
        elif not path.is_dir():
            path.mkdir(parents=True, mode=0o755)
        k8s.apply(ctx, f"/api/v1/persistentvolumes/{name}", _volume(name, path), NAME)
        free += phase in (None, "Available", "Released", "Failed")
    return free


def up(ctx: Context) -> dict[str, str]:
    if k8s.external_kubeconfig(ctx):
        say(f"{NAME}: KUBECONFIG names another cluster; no local node is added to it")
        return {}
    _require_host()
    ctx.ensure()
    bins = build(ctx)
    base = node_dir(ctx)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    _clear_leftovers(ctx)
    _ensure_bridge()
    # Releases before the real node ran the images as side containers on 18080/18000.
    for name in ("go-orchestrator", "py-ai-engine"):
        subprocess.run(["docker", "rm", "-f", f"thinkus-preview-{name}"], capture_output=True, check=False)
    pause_ref = _start_containerd(ctx, bins["pause"])
    creds = _ensure_credentials(ctx)
    _ensure_serving_cert(ctx)

    # DNS first: the kubelet writes its address into every pod's resolv.conf.
    corefile = base / "Corefile"
    coredns_argv = [str(bins["coredns"]), "-conf", str(corefile)]
    _restart_if_changed(ctx, COREDNS, coredns_argv, {corefile: _corefile(creds["coredns"])})
    if not tracked_pid(ctx, COREDNS):
        spawn(ctx, COREDNS, coredns_argv, ports=[COREDNS_HEALTH_PORT, COREDNS_READY_PORT])
        say("started CoreDNS")
    wait_for(ctx, COREDNS, lambda: http_status(f"http://127.0.0.1:{COREDNS_READY_PORT}/ready") == 200, timeout=60)

    kubelet_argv = _kubelet_argv(ctx, bins["kubelet"], creds["kubelet"])
    _restart_if_changed(
        ctx,
        KUBELET,
        kubelet_argv,
        {
            base / "kubelet.yaml": yaml.safe_dump(_kubelet_config(ctx), sort_keys=True),
            # Pods with dnsPolicy Default get no resolver beyond the cluster's.
            base / "resolv.conf": f"nameserver {CLUSTER_DNS}\n",
        },
    )
    if not tracked_pid(ctx, KUBELET):
        spawn(ctx, KUBELET, kubelet_argv, ports=[KUBELET_HEALTHZ_PORT])
        say(f"started the kubelet of {NODE_NAME}")
    wait_for(ctx, KUBELET, lambda: http_status(f"http://127.0.0.1:{KUBELET_HEALTHZ_PORT}/healthz") == 200, timeout=90)

    proxy_config = base / "kube-proxy.yaml"
    proxy_argv = [str(bins["kube-proxy"]), f"--config={proxy_config}", "--v=1"]
    _restart_if_changed(
        ctx, KUBE_PROXY, proxy_argv, {proxy_config: yaml.safe_dump(_kube_proxy_config(creds["kube-proxy"]))}
    )
    if not tracked_pid(ctx, KUBE_PROXY):
        spawn(ctx, KUBE_PROXY, proxy_argv, ports=[KUBE_PROXY_HEALTHZ_PORT])
        say("started kube-proxy")
    wait_for(
        ctx, KUBE_PROXY, lambda: http_status(f"http://127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}/healthz") == 200, timeout=60
    )
    wait_for(ctx, KUBELET, lambda: _node_ready(ctx), timeout=120, interval=1)
    free = _ensure_volumes(ctx)
    say(
        f"real node {NODE_NAME} is Ready ({NODE_IP}, pods {POD_CIDR}, cluster DNS {CLUSTER_DNS}, sandbox {pause_ref}); "
        f"StorageClass {STORAGE_CLASS}: {free} of {VOLUMES} local volumes free"
    )
    return {
        "storage_class": STORAGE_CLASS,
        "node_name": NODE_NAME,
        "node_ip": NODE_IP,
        "node_pod_cidr": POD_CIDR,
        "cluster_dns": CLUSTER_DNS,
        "containerd_socket": str(CONTAINERD_SOCKET),
    }


def status(ctx: Context) -> tuple[bool, str]:
    early = k8s.beside_cluster_status(ctx, PROCESSES)
    if early:
        return early
    try:
        ready = _node_ready(ctx)
    except OSError as err:
        return False, f"{NODE_NAME}: API server not reachable ({err})"
    if not ready:
        return False, f"{NODE_NAME} is not Ready"
    status_, pods = k8s.api(ctx, "GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE_NAME}")
    items = pods.get("items", []) if status_ == 200 else []
    running = sum(1 for p in items if p.get("status", {}).get("phase") == "Running")
    groups: dict[str, int] = {}
    for pod in items:
        meta = pod.get("metadata", {})
        app = (meta.get("labels") or {}).get("app") or meta.get("name", "?")
        key = f"{meta.get('namespace', '?')}/{app}"
        groups[key] = groups.get(key, 0) + 1
    listed = ", ".join(f"{key} x{count}" for key, count in sorted(groups.items()))
    return True, f"{NODE_NAME} Ready at {NODE_IP}, {running}/{len(items)} pods Running" + (
        f" ({listed})" if listed else ""
    )


def _stop_pods() -> None:
    """Kill and remove every container of our containerd (the pods' sandboxes included)."""
    if not _containerd_answers():
        return
    tasks = [line.split()[0] for line in _ctr("tasks", "ls").stdout.decode().splitlines()[1:] if line.strip()]
    for task in tasks:
        _ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 30
    for task in tasks:
        while _ctr("tasks", "delete", task, check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
    containers = _ctr("containers", "ls", "-q").stdout.decode().split()
    for container in containers:
        _ctr("containers", "delete", container, check=False)
    if containers:
        say(f"removed {len(containers)} containers of the real node")


def _unmount_under(root: Path) -> None:
    """Unmount what the kubelet and the CRI left mounted below ``root`` (deepest first), and
    ``root`` itself where it is a mount: the kubelet bind-mounts its root directory onto itself
    (to make it shared), which would otherwise keep the checkout from being deleted."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(root) + "/"
    points = {line.split()[1].encode().decode("unicode_escape") for line in mounts}
    targets = sorted(
        {point for point in points if point.startswith(prefix) or point == str(root)},
        key=len,
        reverse=True,
    )
    for target in targets:
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def down(ctx: Context) -> None:
    """Stop the node: kube-proxy's rules, the kubelet, every pod, containerd, CoreDNS, the bridge."""
    for name in (KUBE_PROXY, KUBELET):
        if stop(ctx, name):
            say(f"stopped {name}")
    bins_dir = ctx.cache_dir / "bin" / f"kubernetes-{k8s.k8s_version()}"
    proxy = bins_dir / "kube-proxy"
    if proxy.exists():
        subprocess.run([str(proxy), "--cleanup"], capture_output=True, check=False)
    _stop_pods()
    if stop(ctx, CONTAINERD):
        say("stopped containerd")
    if stop(ctx, COREDNS):
        say("stopped CoreDNS")
    # The CRI's network namespaces and mounts of the pods that were just killed (containerd
    # 1.6 pins pod network namespaces as /run/netns/cni-*; nothing else here makes those).
    for pinned in Path("/run/netns").glob("cni-*"):
        subprocess.run(["umount", str(pinned)], capture_output=True, check=False)
        pinned.unlink(missing_ok=True)
    _unmount_under(RUN_DIR)
    _unmount_under(node_dir(ctx) / "kubelet")
    _remove_network(ctx)


def main(argv: Sequence[str]) -> int:
    ctx = Context()
    command = argv[0] if argv else "status"
    if command == "up":
        print(json.dumps(up(ctx)))
    elif command == "down":
        down(ctx)
    elif command == "status":
        ok, where = status(ctx)
        print(f"{NAME}: {'up' if ok else 'down'} - {where}")
        return 0 if ok else 1
    else:
        print("usage: python -m tools.localenv.node up|down|status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except LocalEnvError as err:
        print(f"local-env: {err}", file=sys.stderr)
        sys.exit(1)
