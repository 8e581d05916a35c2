"""The execution environment (EE) image, built here the way AWX expects one.

    python -m tools.ee build     # ansible-builder + the local Docker engine; pushes to the local registry
    python -m tools.ee check     # make lint: the EE's pins equal requirements.txt (one source of truth)
    python -m tools.ee info      # the image reference, size and digest of the last build, as JSON

The build takes execution-environment/execution-environment.yml as it is and adds only what
this machine needs:
- the base image by digest (EE_BASE_IMAGE=<registry>/thinkus-base/python@sha256:...): the
  local stand-in of python:3.11-slim-bookworm, as the local registry serves it. A tag is refused.
- the machine's CA bundle for pip and apt inside the build (PIP_CERT), when one is set.
The collection tarball comes from ``ansible-galaxy collection build`` of this tree.
The image is tagged ``thinkus-ops-ee:<version>`` and pushed as
``<registry>/thinkus/thinkus-ops-ee:<version>`` (the name backup_image has in the inventories).
Registry credentials go in the push request's header, never into ~/.docker or argv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EE_DIR = ROOT / "execution-environment"
DEFINITION = EE_DIR / "execution-environment.yml"
REQUIREMENTS = ROOT / "requirements.txt"
EE_REQUIREMENTS = EE_DIR / "requirements-ee.txt"
NAVIGATOR_SETTINGS = ROOT / "ansible-navigator.yml"
BASE_REPOSITORY = "thinkus-base/python"
BASE_TAG = "3.11-slim-bookworm"
PUSH_REPOSITORY = "thinkus/thinkus-ops-ee"
DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)\s*(?:#.*)?$")


class EEError(RuntimeError):
    """The EE could not be checked or built; the message says why."""


def say(msg: str) -> None:
    print(f"ee: {msg}", flush=True)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file; anything else that is not a comment is an error."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN.match(line)
        if not m:
            raise EEError(f"{path.name}:{number}: {line!r} is not pinned as name==version")
        pins[_norm(m.group(1))] = m.group(3)
    return pins


def galaxy_version() -> str:
    return str(yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"])


def image_tag() -> str:
    return f"thinkus-ops-ee:{galaxy_version()}"


def _bundled_collection_versions() -> dict[str, str]:
    """Versions of the collections in the installed `ansible` package (the tests' set); empty without it."""
    try:
        import ansible_collections
    except ImportError:
        return {}
    versions = {}
    for root in map(Path, ansible_collections.__path__):
        for manifest in root.glob("*/*/MANIFEST.json"):
            info = json.loads(manifest.read_text())["collection_info"]
            versions.setdefault(f"{info['namespace']}.{info['name']}", str(info["version"]))
    return versions


def check() -> list[str]:
    """What differs between the EE definition and the set the tests run with (empty: consistent)."""
    problems: list[str] = []
    try:
        want = read_pins(REQUIREMENTS)
        have = read_pins(EE_REQUIREMENTS)
    except EEError as err:
        return [str(err)]
    for name, version in have.items():
        if name not in want:
            problems.append(f"requirements-ee.txt pins {name}=={version}, which requirements.txt does not pin")
        elif want[name] != version:
            problems.append(f"requirements-ee.txt pins {name}=={version}, requirements.txt {name}=={want[name]}")
    definition = yaml.safe_load(DEFINITION.read_text())
    deps = definition.get("dependencies", {})
    steps = " ".join(str(x) for x in (definition.get("additional_build_steps") or {}).get("append_builder") or [])
    for key in ("ansible_core", "ansible_runner"):
        spec = str((deps.get(key) or {}).get("package_pip", ""))
        m = PIN.match(spec)
        if not m:
            problems.append(f"dependencies.{key}.package_pip must be pinned as name==version (got {spec!r})")
            continue
        name, version = _norm(m.group(1)), m.group(3)
        if want.get(name) != version:
            problems.append(f"dependencies.{key} pins {name}=={version}, requirements.txt {name}=={want.get(name)}")
    bundle = re.search(r"--target /output/ansible-bundle (ansible==\S+)", steps)
    if not bundle or bundle.group(1) != f"ansible=={want.get('ansible')}":
        problems.append(
            "append_builder must install the ansible package pinned in requirements.txt "
            f"(ansible=={want.get('ansible')})"
        )
    if "galaxy" in deps:
        problems.append(
            "dependencies.galaxy: the collections come from the pinned `ansible` package (append_builder), "
            "as in the tests; a galaxy requirements file would float"
        )
    collections = yaml.safe_load((EE_DIR / "requirements.yml").read_text())["collections"]
    wanted = sorted(c["name"] for c in collections)
    bundled = _bundled_collection_versions()
    for c in collections:
        if bundled and str(c.get("version")) != bundled.get(c["name"]):
            problems.append(
                f"execution-environment/requirements.yml pins {c['name']} {c.get('version')}, the pinned ansible "
                f"package carries {bundled.get(c['name'], 'none')}"
            )
    kept = re.search(r"keep-collections /output/ansible-bundle/ansible_collections ([a-z0-9_. ]+)", steps)
    if not kept or sorted(kept.group(1).split()) != wanted:
        problems.append(f"execution-environment.yml must keep exactly the collections of requirements.yml: {wanted}")
    version = galaxy_version()
    text = DEFINITION.read_text()
    if f"thinkus-ops-{version}.tar.gz" not in text or f"thinkus-ops-ee:{version}" not in text:
        problems.append(
            f"execution-environment.yml must install thinkus-ops-{version}.tar.gz and tag thinkus-ops-ee:{version}"
        )
    if NAVIGATOR_SETTINGS.is_file():
        nav = yaml.safe_load(NAVIGATOR_SETTINGS.read_text()) or {}
        image = (nav.get("ansible-navigator", {}).get("execution-environment", {}) or {}).get("image", "")
        if image != image_tag():
            problems.append(f"ansible-navigator.yml runs the image {image!r}; the EE is tagged {image_tag()!r}")
    else:
        problems.append("ansible-navigator.yml is missing at the repository root")
    return problems


def _local_settings() -> tuple[str, dict[str, str]]:
    state = Path(os.environ.get("THINKUS_LOCAL_DIR") or ROOT / ".local")
    try:
        endpoints = yaml.safe_load((state / "endpoints.yml").read_text()) or {}
        creds = yaml.safe_load((state / "credentials.yml").read_text()) or {}
    except OSError as err:
        raise EEError(f"the local environment is not up ({err.filename} missing): run `make local-up` first") from err
    registry = endpoints.get("registry")
    if not registry:
        raise EEError("the local environment has no registry endpoint: run `make local-up` first")
    return registry, {"username": creds["registry_username"], "password": creds["registry_password"]}


def base_reference(registry: str, auth: dict[str, str]) -> str:
    from tools.localenv.images import _registry_digest

    digest = _registry_digest(registry, BASE_REPOSITORY, BASE_TAG, auth)
    if not digest:
        raise EEError(f"the local registry serves no {BASE_REPOSITORY}:{BASE_TAG}: run `make local-up` first")
    return f"{registry}/{BASE_REPOSITORY}@{digest}"


def _definition_for_build(context_parent: Path, base: str) -> Path:
    """The definition with this machine's additions, written beside copies of its files."""
    if not DIGEST_REF.match(base):
        raise EEError(f"the EE base image must be pinned by digest (<name>@sha256:<64 hex>), got {base!r}")
    work = context_parent / "execution-environment"
    shutil.copytree(EE_DIR, work)
    definition = yaml.safe_load(DEFINITION.read_text())
    definition["images"]["base_image"]["name"] = base
    ca = os.environ.get("PIP_CERT", "")
    if ca and Path(ca).is_file():
        shutil.copy(ca, work / "files" / "build-ca.pem")
        definition["additional_build_files"].append({"src": "files/build-ca.pem", "dest": "ca-thinkus"})
        definition["additional_build_steps"]["prepend_base"] = [
            "COPY _build/ca-thinkus/build-ca.pem /usr/local/share/ca-certificates/thinkus-build-ca.crt",
            "ENV PIP_CERT=/usr/local/share/ca-certificates/thinkus-build-ca.crt",
            *definition["additional_build_steps"]["prepend_base"],
        ]
    # the tarball path is relative to the definition: ../.build/
    (context_parent / ".build").symlink_to(ROOT / ".build")
    out = work / "execution-environment.yml"
    out.write_text(yaml.safe_dump(definition, sort_keys=False))
    return out


def _bin(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def build(push: bool = True, no_cache: bool = False) -> dict[str, object]:
    problems = check()
    if problems:
        raise EEError("the EE definition does not match requirements.txt:\n  " + "\n  ".join(problems))
    registry, auth = _local_settings()
    base = base_reference(registry, auth)
    t0 = time.monotonic()
    say("building the collection tarball")
    subprocess.run(
        [_bin("ansible-galaxy"), "collection", "build", "--force", "--output-path", str(ROOT / ".build"), str(ROOT)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tag = image_tag()
    log_dir = ROOT / ".local" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "ee-build.log"
    with tempfile.TemporaryDirectory(prefix="thinkus-ee-") as tmp:
        definition = _definition_for_build(Path(tmp), base)
        say(f"ansible-builder build {tag} FROM {base} (cold: several minutes of pip and apt; log {log})")
        with log.open("wb") as fh:
            res = subprocess.run(
                [
                    _bin("ansible-builder"),
                    "build",
                    "-f",
                    str(definition),
                    "-c",
                    str(Path(tmp) / "context"),
                    "--container-runtime",
                    "docker",
                    "-t",
                    tag,
                    "-v",
                    "2",
                    *(["--no-cache"] if no_cache else []),
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
                check=False,
            )
    if res.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise EEError(f"ansible-builder build failed (log {log}):\n" + "\n".join(tail))
    built = time.monotonic() - t0
    result: dict[str, object] = {"image": tag, "base": base, "build_seconds": round(built, 1), "cold": no_cache}
    import docker

    api = docker.APIClient(version="auto", timeout=600)
    result["size_bytes"] = api.inspect_image(tag)["Size"]
    if push:
        target = f"{registry}/{PUSH_REPOSITORY}"
        version = galaxy_version()
        api.tag(tag, target, version, force=True)
        for chunk in api.push(target, tag=version, auth_config=auth, stream=True, decode=True):
            if "error" in chunk:
                raise EEError(f"pushing {target}:{version} failed: {chunk['error'].strip()}")
        digests = [d for d in api.inspect_image(tag).get("RepoDigests") or [] if d.startswith(f"{target}@")]
        result["pushed"] = f"{target}:{version}"
        result["digest"] = digests[0].split("@", 1)[1] if digests else ""
    result["seconds"] = round(time.monotonic() - t0, 1)
    info_path = ROOT / ".local" / "artifacts" / "ee.json"
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(result, indent=2) + "\n")
    say(
        f"{tag}: {result['size_bytes'] / 1e6:.0f} MB, built in {built:.0f}s"
        + (f", pushed as {result['pushed']}" if push else "")
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ee", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the EE image and push it to the local registry")
    b.add_argument("--no-push", action="store_true")
    b.add_argument("--no-cache", action="store_true", help="no layer cache: the cold build time")
    sub.add_parser("check", help="the EE's pins equal requirements.txt")
    sub.add_parser("info", help="the last build's image, size and digest (JSON)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "check":
            problems = check()
            for p in problems:
                print(f"execution-environment: {p}", file=sys.stderr)
            if not problems:
                print("execution-environment: pins match requirements.txt")
            return 1 if problems else 0
        if args.cmd == "info":
            print((ROOT / ".local" / "artifacts" / "ee.json").read_text(), end="")
            return 0
        build(push=not args.no_push, no_cache=args.no_cache)
    except (EEError, subprocess.CalledProcessError) as err:
        print(f"ee: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
