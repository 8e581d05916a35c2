"""Base images built here, since no registry can be pulled from.

A Debian root file system made with debootstrap (from the mirror this machine's apt uses)
is ``docker import``ed as ``thinkus-base/debian:<suite>``; a Go builder and a Python
runtime image are built FROM it (tools/localenv/images/*). The rootfs tarball is cached
outside the checkout, so a warm bring-up only checks that the images exist.
Roles map upstream names to these through variables (docker_build_base_images), as the
local registry holds them: the registry component pushes them there (publish), since builds
take FROM images by registry digest.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ._proc import Context, LocalEnvError, run, say

NAME = "base-images"
SUITE = "bookworm"
BASE = f"thinkus-base/debian:{SUITE}"
DERIVED = {
    "golang": f"thinkus-base/golang:{SUITE}",
    "python": f"thinkus-base/python:3.11-slim-{SUITE}",
}
# Stand-ins for the upstream images the monitoring role runs in cluster mode, on the same base,
# pulled by the real node from the local registry: prom/alertmanager from Debian's package here;
# prom/prometheus from its Go module (Debian's leaves Kubernetes discovery out), built with the
# other Go builds and put on the base by tools/localenv/metrics.py (build_binary_image).
MONITORING = {"alertmanager": f"thinkus-base/alertmanager:{SUITE}"}
PROMETHEUS = f"thinkus-base/prometheus:2.42.0-{SUITE}"
IMAGES_DIR = Path(__file__).resolve().parent / "images"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (never hard-coded in the project)."""
    if os.environ.get("THINKUS_DEBIAN_MIRROR"):
        return os.environ["THINKUS_DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        try:
            text = src.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^\s*URIs:\s*(\S+)", text, re.M):
            if m.group(1).rstrip("/").endswith("/debian"):
                return m.group(1)
        for m in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.M):
            if m.group(1).rstrip("/").endswith("/debian"):
                return m.group(1)
    raise LocalEnvError("base-images: no Debian mirror found in apt sources; set THINKUS_DEBIAN_MIRROR")


def image_exists(ref: str) -> bool:
    res = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False)
    return res.returncode == 0


def image_label(ref: str, label: str) -> str:
    res = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', ref],
        capture_output=True,
        check=False,
        text=True,
    )
    return res.stdout.strip() if res.returncode == 0 else ""


def rootfs_tarball(ctx: Context) -> Path:
    tarball = ctx.cache_dir / "base" / f"debian-{SUITE}-minbase.tar"
    if tarball.is_file():
        return tarball
    if not shutil.which("debootstrap"):
        raise LocalEnvError("base-images: debootstrap not found; run `make setup`")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    say(f"debootstrap {SUITE} (minbase) into the cache: a few minutes, once per machine")
    with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        log = ctx.log_path("debootstrap")
        with log.open("wb") as fh:
            res = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=ca-certificates", SUITE, str(rootfs), debian_mirror()],
                stdout=fh,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if res.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            raise LocalEnvError(f"base-images: debootstrap failed (log {log}):\n" + "\n".join(tail))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        partial = tarball.with_suffix(".partial")
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        os.replace(partial, tarball)
    return tarball


def build_binary_image(name: str, ref: str, binary: Path) -> None:
    """``ref`` from tools/localenv/images/<name>/Dockerfile with ``binary`` beside it in the
    build context (a scratch directory); rebuilt only when the Dockerfile or the binary changed."""
    dockerfile = IMAGES_DIR / name / "Dockerfile"
    digest = hashlib.sha256(dockerfile.read_bytes())
    with binary.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    want = digest.hexdigest()[:16]
    if image_exists(ref) and image_label(ref, "thinkus.base.hash") == want:
        return
    say(f"building {ref} (the binary on the base image)")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(dockerfile, Path(tmp) / "Dockerfile")
        shutil.copy2(binary, Path(tmp) / binary.name)
        run(
            ["docker", "build", "--label", f"thinkus.base.hash={want}", "--build-arg", f"BASE={BASE}", "-t", ref, "."],
            cwd=Path(tmp),
            env={"DOCKER_BUILDKIT": "0"},
        )


def _dockerfile_hash(name: str) -> str:
    return hashlib.sha256((IMAGES_DIR / name / "Dockerfile").read_bytes()).hexdigest()[:16]


def up(ctx: Context) -> dict[str, str]:
    if not image_exists(BASE):
        tarball = rootfs_tarball(ctx)
        say(f"importing {BASE}")
        run(["docker", "import", "--change", 'CMD ["/bin/bash"]', str(tarball), BASE])
    for name, ref in {**DERIVED, **MONITORING}.items():
        want = _dockerfile_hash(name)
        if image_exists(ref) and image_label(ref, "thinkus.base.hash") == want:
            continue
        say(f"building {ref} (apt inside the image: about a minute)")
        run(
            ["docker", "build", "--label", f"thinkus.base.hash={want}", "--build-arg", f"BASE={BASE}", "-t", ref, "."],
            cwd=IMAGES_DIR / name,
            env={"DOCKER_BUILDKIT": "0"},
        )
    return {
        "base_image_debian": BASE,
        **{f"base_image_{k}": v for k, v in DERIVED.items()},
        **{f"image_{k}": v for k, v in MONITORING.items()},
    }


def _registry_digest(registry: str, name: str, tag: str, auth: dict[str, str]) -> str | None:
    """The digest the registry serves for ``name:tag`` (None when it has none or does not answer)."""
    token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
    request = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/{tag}",
        method="HEAD",
        headers={
            "Authorization": f"Basic {token}",
            "Accept": ", ".join(
                ["application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"]
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.headers.get("Docker-Content-Digest")
    except (urllib.error.URLError, OSError):
        return None


def publish(registry: str, username: str, password: str, refs: Sequence[str] | None = None) -> list[str]:
    """Push the base images to the local registry as ``<registry>/<name>`` (idempotent).

    thinkus.ops.docker_build_image takes every FROM image by its registry digest, never by a
    local image ID, so the stand-ins must be in a registry like upstream images are. The
    credentials go in the push request's header (docker SDK), never into ~/.docker or argv.
    ``refs``: these local images instead of the base ones. Returns the references pushed by this call.
    """
    import docker  # the virtualenv's SDK; imported here so that `status` needs no engine client

    api = docker.APIClient(version="auto", timeout=600)
    auth = {"username": username, "password": password}
    pushed = []
    for ref in refs if refs is not None else (BASE, *DERIVED.values(), *MONITORING.values()):
        name, _sep, tag = ref.rpartition(":")
        target = f"{registry}/{name}"
        source_id = api.inspect_image(ref)["Id"]
        try:
            current = api.inspect_image(f"{target}:{tag}")
        except docker.errors.ImageNotFound:
            current = {}
        # The engine's memory of an earlier push is not enough: the registry may be a new one
        # (another checkout's .local, a wiped state): ask the registry itself.
        known = [d.split("@", 1)[1] for d in current.get("RepoDigests") or [] if d.startswith(f"{target}@")]
        if current.get("Id") == source_id and _registry_digest(registry, name, tag, auth) in known:
            continue
        api.tag(ref, target, tag, force=True)
        for chunk in api.push(target, tag=tag, auth_config=auth, stream=True, decode=True):
            if "error" in chunk:
                raise LocalEnvError(f"base-images: pushing {target}:{tag} failed: {chunk['error'].strip()}")
        pushed.append(f"{target}:{tag}")
    return pushed


def status(ctx: Context) -> tuple[bool, str]:
    refs = (BASE, *DERIVED.values(), *MONITORING.values())
    return all(image_exists(ref) for ref in refs), ", ".join(refs)


def down(ctx: Context) -> None:
    """Images stay in the engine's cache; nothing to stop."""
