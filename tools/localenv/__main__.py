"""make local-up / local-down / local-status.

    python -m tools.localenv up [component ...]
    python -m tools.localenv down [component ...]
    python -m tools.localenv status
    python -m tools.localenv reset      (Kubernetes again with an empty etcd)
    python -m tools.localenv where      (what `make demo` deployed and where to look)

Components come up in dependency order and go down in reverse. Non-secret endpoints are
written to .local/endpoints.yml; credentials stay in .local/credentials.yml (0600).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import yaml

from ._proc import Context, LocalEnvError, say

# The components' modules in start order (each module's NAME is what commands take). Imported when
# a command needs them: `where` (the last step of every `make demo`) reads two files and should not
# pay for boto3, psycopg2 and cryptography.
COMPONENT_MODULES = (
    "docker",
    "images",
    "registry",
    "postgres",
    "redis",
    "s3",
    "alertmanager",
    "prometheus",
    "vercel",
    "k8s",
    "node",
    "metrics",
    "ingress",
    "acme",
)


def _component(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.{name}")


def _components() -> list[ModuleType]:
    return [_component(module) for module in COMPONENT_MODULES]


def _built_in_go() -> tuple[ModuleType, ...]:
    """Kubernetes, the node, the cluster metrics, the ingress controller and ACME: Prebuild's builds."""
    return tuple(_component(module) for module in ("k8s", "node", "metrics", "ingress", "acme"))


def _select(names: list[str]) -> list[ModuleType]:
    components = _components()
    known = [m.NAME for m in components]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LocalEnvError(f"unknown component(s): {', '.join(unknown)} (known: {', '.join(known)})")
    return [m for m in components if not names or m.NAME in names]


class Prebuild:
    """The Go builds (Kubernetes, kwok, etcd, the node's kubelet, kube-proxy and CoreDNS;
    metrics-server and kube-state-metrics; Traefik; pebble and cert-manager) on a thread of
    their own, in that order, while the components before Kubernetes come up: on a cold
    machine the downloads and Debian's debootstrap then overlap the compilation instead of
    following it, and each component waits only for its own build (Kubernetes starts while
    Traefik still compiles). Later runs find every binary in the cache, and the thread ends
    at once."""

    def __init__(self, ctx: Context, builds: list[tuple[ModuleType, Callable[[Context], object]]]) -> None:
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.seconds = 0.0
        self.done = {build[0]: threading.Event() for build in builds}

        def work() -> None:
            try:
                for comp, build in builds:
                    build(ctx)
                    self.done[comp].set()
            except BaseException as exc:  # re-raised in the main thread by join()
                self.error = exc
            finally:
                self.seconds = time.monotonic() - self.started
                for event in self.done.values():
                    event.set()

        self.thread = threading.Thread(target=work, name="go-builds", daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, ctx: Context, selected: list[ModuleType]) -> Prebuild | None:
        k8s, node, metrics, ingress, acme = _built_in_go()
        if k8s.external_kubeconfig(ctx):
            return None  # a cluster of the user's own: nothing to build
        builds = [(comp, comp.build) for comp in (node, metrics, ingress, acme) if comp in selected]
        if not builds and k8s in selected:
            builds = [(k8s, k8s.build)]
        return cls(ctx, builds) if builds else None

    def join(self, comp: ModuleType) -> None:
        """Wait for ``comp``'s build; Kubernetes waits for the first one (the node's includes it)."""
        event = self.done.get(comp) or next(iter(self.done.values()))
        if not event.is_set():
            say(f"{comp.NAME}: waiting for its Go build to finish")
        event.wait()
        if self.error is not None:
            raise self.error

    def finish(self) -> float:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.seconds


def cmd_up(ctx: Context, names: list[str], session: Path | None = None) -> None:
    ctx.ensure()
    endpoints_file = ctx.state_dir / "endpoints.yml"
    try:
        endpoints = yaml.safe_load(endpoints_file.read_text()) or {}
    except FileNotFoundError:
        endpoints = {}
    total = time.monotonic()
    selected = _select(names)
    prebuild = Prebuild.start(ctx, selected)
    took: dict[str, float] = {}
    built_in_go = _built_in_go()
    for comp in selected:
        if comp in built_in_go and prebuild:
            waited = time.monotonic()
            prebuild.join(comp)
            waited = time.monotonic() - waited
            if waited >= 0.5:  # its cold start includes the wait for its Go build
                took[f"{comp.NAME} build wait"] = round(waited, 1)
        t0 = time.monotonic()
        was_up = comp.status(ctx)[0]
        say(f"{comp.NAME}: {'checking' if was_up else 'starting'}")
        endpoints.update(comp.up(ctx) or {})
        if session and not was_up:
            with session.open("a") as fh:
                fh.write(comp.NAME + "\n")
        took[comp.NAME] = round(time.monotonic() - t0, 1)
        say(f"{comp.NAME}: up in {took[comp.NAME]:.1f}s")
        endpoints_file.write_text("---\n" + yaml.safe_dump(endpoints, sort_keys=True))
    took["total"] = round(time.monotonic() - total, 1)
    if prebuild:
        took["go builds"] = round(prebuild.finish(), 1)
    # The time of each component, for the README's measured numbers (python -m tools.measurements).
    artifacts = ctx.state_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "local-up.json").write_text(json.dumps(took, indent=2) + "\n")
    say(f"all up in {took['total']:.1f}s; endpoints in {endpoints_file}")


def cmd_down(ctx: Context, names: list[str], session: Path | None = None) -> None:
    if session:
        try:
            names = session.read_text().split()
        except FileNotFoundError:
            names = []
        session.unlink(missing_ok=True)
        if not names:
            say("nothing was started by this session; leaving the environment as it was")
            return
    for comp in reversed(_select(names)):
        comp.down(ctx)
        say(f"{comp.NAME}: stopped")


def cmd_reset(ctx: Context) -> None:
    """An empty cluster (nothing of ours in it), the rest of the environment as it is."""
    t0 = time.monotonic()
    k8s, node, metrics, ingress, acme = _built_in_go()
    # The kubelet registers its Node once, at start: it goes down and up with the cluster.
    node.down(ctx)
    k8s.reset(ctx)
    node.up(ctx)
    metrics.up(ctx)  # its RBAC, Service and APIService went with etcd
    ingress.up(ctx)  # its IngressClass and RBAC too
    acme.up(ctx)  # cert-manager's CRDs, namespace and RBAC too
    say(f"kubernetes: reset to an empty cluster in {time.monotonic() - t0:.1f}s")


def cmd_where(ctx: Context) -> int:
    """The last lines of `make demo`: the deploy's result and every address a user wants next."""
    try:
        endpoints = yaml.safe_load((ctx.state_dir / "endpoints.yml").read_text()) or {}
    except FileNotFoundError:
        endpoints = {}
    summary_path = ctx.state_dir / "artifacts" / "deploy-summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (FileNotFoundError, ValueError):
        summary = {}
    urls = summary.get("urls") or {}
    print("")
    print(f"thinkus demo: result={summary.get('result', 'unknown')} changed={summary.get('changed', '?')}")
    root = endpoints.get("acme_root_ca")
    address = endpoints.get("ingress_address")
    for host, url in sorted(urls.items()):
        print(f"  API host {host:<22} {url}")
        if root and address:
            print(f"    curl --resolve {host}:443:{address} --cacert {root} {url.rstrip('/')}/health")
    rows = [
        ("Prometheus", endpoints.get("prometheus_url")),
        ("Alertmanager", endpoints.get("alertmanager_url")),
        ("Kubernetes API", endpoints.get("k8s_server")),
        ("metrics.k8s.io (top, HPA)", endpoints.get("metrics_api")),
        ("kube-state-metrics", endpoints.get("kube_state_metrics_url")),
        ("Ingress controller (Traefik)", endpoints.get("ingress_https_url")),
        ("ACME directory (pebble)", endpoints.get("acme_directory")),
        ("ACME root CA (trust this)", endpoints.get("acme_root_ca")),
        ("kubeconfig", endpoints.get("kubeconfig")),
        ("registry", endpoints.get("registry_url")),
        ("Vercel API stand-in", endpoints.get("vercel_api_url")),
    ]
    for label, value in rows:
        if value:
            print(f"  {label:<31} {value}")
    print(f"  {'deploy summary':<31} {summary_path}")
    print("  every component and its state:  make local-status")
    print("  stop it all (state and caches stay for a warm start):  make local-down")
    return 0 if summary.get("result") == "ok" else 1


def cmd_status(ctx: Context, names: list[str]) -> int:
    down = 0
    for comp in _select(names):
        ok, addr = comp.status(ctx)
        down += not ok
        print(f"{comp.NAME:<14} {'up' if ok else 'down':<5} {addr}")
    return 1 if down else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-env", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "reset", "status", "where"])
    parser.add_argument("components", nargs="*")
    parser.add_argument(
        "--session",
        type=Path,
        help="up: record the components this call started in FILE; down: stop only those",
    )
    args = parser.parse_args(argv)
    ctx = Context()
    try:
        if args.action == "up":
            cmd_up(ctx, args.components, args.session)
        elif args.action == "where":
            return cmd_where(ctx)
        elif args.action == "reset":
            cmd_reset(ctx)
        elif args.action == "down":
            cmd_down(ctx, args.components, args.session)
        else:
            return cmd_status(ctx, args.components)
    except LocalEnvError as err:
        print(f"local-env: ERROR: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
