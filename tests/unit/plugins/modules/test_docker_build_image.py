# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of thinkus.ops.docker_build_image: plan, check mode, the hash and two engines.

The registry is an in-memory stand-in of module_utils._registry.RegistryClient (the client
itself is tested over HTTP in tests/unit/plugins/module_utils/test_registry.py); the engine
is a stand-in of the docker SDK's APIClient that records every call. A real build against
the local engine is in tests/integration/test_docker_build.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils import _registry
from ansible_collections.thinkus.ops.plugins.module_utils._image_build import BuildFailure
from ansible_collections.thinkus.ops.plugins.modules import docker_build_image as mod

REGISTRY = "registry.test:5000"
BASE_REF = f"{REGISTRY}/base/python:3.11"
BASE_DIGEST = "sha256:" + "b" * 64
MUTATIONS = {"build", "tag", "push", "pull"}


class FakeRegistry:
    """Repositories -> {tag: (digest, media type, manifest)} and config labels by manifest digest."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, tuple[str, str, bytes]]] = {"base/python": {}}
        self.labels_of: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.base_digest = BASE_DIGEST

    def client(self, registry: str, username: Any = None, password: Any = None, insecure: bool = False,
               timeout: float = 60) -> Any:  # fmt: skip
        fake = self

        class Client:
            def manifest(self, repo: str, ref: str, method: str = "GET", scope_actions: str = "") -> Any:
                fake.calls.append(("manifest", registry, repo, ref, username or ""))
                return fake.tags.get(repo, {}).get(ref)

            def resolve(self, repo: str, ref: str) -> str:
                fake.calls.append(("resolve", registry, repo, ref, username or ""))
                if repo == "base/python" and ref == "3.11":
                    return fake.base_digest
                raise _registry.RegistryError(registry, 404, f"registry {registry} has no {repo}:{ref}")

            def labels(self, repo: str, manifest: bytes) -> dict[str, str]:
                return fake.labels_of.get(hashlib.sha256(manifest).hexdigest(), {})

            def put_manifest(self, repo: str, tag: str, media_type: str, body: bytes) -> str:
                fake.calls.append(("put_manifest", registry, repo, tag))
                fake.tags.setdefault(repo, {})[tag] = ("sha256:" + hashlib.sha256(body).hexdigest(), media_type, body)
                return ""

        return Client()

    def store(self, repo: str, tags: list[str], inputs_hash: str) -> str:
        manifest = json.dumps({"config": {"digest": "sha256:" + inputs_hash}}).encode()
        self.labels_of[hashlib.sha256(manifest).hexdigest()] = {_registry.HASH_LABEL: inputs_hash}
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        for tag in tags:
            self.tags.setdefault(repo, {})[tag] = (digest, _registry.MANIFEST_V2, manifest)
        return digest


class FakeEngine:
    """The APIClient calls the module makes; ``refs`` maps reference -> image ID."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.refs: dict[str, str] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.dockerfile = ""
        # True: the next run is on another build host, which must not be needed at all
        self.fresh_next = False

    def inspect_image(self, ref: str) -> dict[str, Any]:
        self.calls.append(("inspect_image", ref))
        if ref not in self.refs:
            raise mod.docker.errors.ImageNotFound(ref)
        return {"Id": self.refs[ref]}

    def images(self, filters: dict[str, str]) -> list[dict[str, str]]:
        self.calls.append(("images", filters))
        key, _sep, value = filters["label"].partition("=")
        return [{"Id": i} for i, labels in self.labels.items() if labels.get(key) == value]

    def pull(self, name: str, tag: str, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append(("pull", f"{name}@{tag}"))
        self.refs[f"{name}@{tag}"] = "sha256:base"
        return [{"status": "Downloaded"}]

    def build(self, fileobj: Any, labels: dict[str, str], tag: str, **kwargs: Any) -> list[dict[str, Any]]:
        import tarfile

        fileobj.seek(0)
        with tarfile.open(fileobj=fileobj) as tar:
            member = tar.extractfile(kwargs["dockerfile"])
            assert member is not None
            self.dockerfile = member.read().decode()
        self.calls.append(("build", tag))
        image = "sha256:" + hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()
        self.labels[image] = labels
        self.refs[tag] = image
        return [{"stream": "Step 1/2 : FROM x\n"}, {"aux": {"ID": image}}]

    def tag(self, image: str, repository: str, tag: str, force: bool) -> None:
        self.calls.append(("tag", f"{repository}:{tag}"))
        self.refs[f"{repository}:{tag}"] = image

    def push(self, repository: str, tag: str, auth_config: Any, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append(("push", f"{repository}:{tag}"))
        assert auth_config == {"username": "ci", "password": "s3cret"}
        image = self.refs[f"{repository}:{tag}"]
        repo = repository.split("/", 1)[1]
        digest = self.registry.store(repo, [tag], self.labels[image][_registry.HASH_LABEL])
        return [{"status": "Pushed"}, {"aux": {"Tag": tag, "Digest": digest}}]


class FakeModule:
    def __init__(self, params: dict[str, Any], check_mode: bool = False) -> None:
        spec = mod.argument_spec()
        self.params = {k: v.get("default") for k, v in spec.items()}
        self.params.update(params)
        self.check_mode = check_mode
        self._diff = True

    def run_command(self, argv: list[str]) -> tuple[int, str, str]:  # pragma: no cover - revision is given
        raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeRegistry, list[FakeEngine]]:
    """The registry, and every engine the module connected to (one per run)."""
    registry = FakeRegistry()
    engines: list[FakeEngine] = []
    monkeypatch.setattr(mod, "RegistryClient", registry.client)

    def connect(self: mod.Engine) -> Any:
        if self._client is None:
            self._client = engines[-1] if engines and not engines[-1].fresh_next else None
            if self._client is None:
                raise AssertionError("the module connected to an engine no test prepared")
        return self._client

    monkeypatch.setattr(mod.Engine, "api", property(connect))
    return registry, engines


def new_engine(registry: FakeRegistry, engines: list[FakeEngine]) -> FakeEngine:
    engine = FakeEngine(registry)
    engines.append(engine)
    return engine


@pytest.fixture
def service(tmp_path: Path) -> dict[str, Any]:
    ctx = tmp_path / "svc"
    ctx.mkdir()
    (ctx / "main.py").write_text("print('hi')\n")
    (ctx / "Dockerfile").write_text(f"FROM {BASE_REF}\nCOPY main.py /app/\n")
    return {
        "name": "svc",
        "context": str(ctx),
        "repository": f"{REGISTRY}/team/svc",
        "tags": ["{revision}", "local"],
        "revision": "0123456789abcdef0123456789abcdef01234567",
        "registry_username": "ci",
        "registry_password": "s3cret",
    }


def run(params: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    return mod.run(FakeModule(params, check_mode))  # type: ignore[arg-type]


def mutations(engine: FakeEngine) -> list[tuple[str, Any]]:
    return [c for c in engine.calls if c[0] in MUTATIONS]


# ---------------------------------------------------------------- check mode, real run, again


def test_check_mode_then_build_then_nothing(world: Any, service: dict[str, Any]) -> None:
    registry, engines = world
    engine = new_engine(registry, engines)

    preview = run(service, check_mode=True)
    assert preview["changed"] is True and preview["actions"] == ["build", "push"]
    assert preview["base_images"] == {BASE_REF: BASE_DIGEST}
    assert preview["diff"]["before"] == {"digest": "", "inputs_hash": "", "tags": []}
    assert preview["diff"]["after"]["inputs_hash"] == preview["inputs_hash"]
    assert mutations(engine) == [] and registry.tags.get("team/svc") is None
    assert not [c for c in registry.calls if c[0] == "put_manifest"]

    first = run(service)
    assert first["changed"] is True and first["inputs_hash"] == preview["inputs_hash"]
    # the build ran FROM the digest that entered the hash, after pulling it by digest
    assert ("pull", f"{REGISTRY}/base/python@{BASE_DIGEST}") in engine.calls
    assert engine.dockerfile.startswith(f"FROM {REGISTRY}/base/python@{BASE_DIGEST}\n")
    tags = registry.tags["team/svc"]
    assert set(tags) == {service["revision"], "local"}
    assert first["digest"] == tags["local"][0] and first["reference"] == f"{REGISTRY}/team/svc@{first['digest']}"
    assert first["diff"]["after"] == {
        "digest": first["digest"],
        "inputs_hash": first["inputs_hash"],
        "tags": first["tags"],
    }
    assert "digest" not in preview["diff"]["after"]  # unknown until built

    again_check = run(service, check_mode=True)
    again = run(service)
    for result in (again_check, again):
        assert result["changed"] is False and result["actions"] == []
        assert result["digest"] == first["digest"]
        assert result["diff"]["before"]["inputs_hash"] == result["diff"]["after"]["inputs_hash"]


def test_a_fresh_engine_rebuilds_nothing(world: Any, service: dict[str, Any]) -> None:
    registry, engines = world
    new_engine(registry, engines)
    first = run(service)
    assert first["actions"] == ["build", "push"]
    # another build host: nothing pulled, nothing built; the module must not even need the engine
    engines[-1].fresh_next = True
    second = run(service)
    assert second["changed"] is False and second["actions"] == []
    assert second["inputs_hash"] == first["inputs_hash"] and second["digest"] == first["digest"]
    assert second["image_id"] == ""


def test_a_new_base_image_digest_rebuilds(world: Any, service: dict[str, Any]) -> None:
    registry, engines = world
    new_engine(registry, engines)
    first = run(service)
    registry.base_digest = "sha256:" + "c" * 64  # the base tag moved in its registry
    second = run(service, check_mode=True)
    assert second["actions"] == ["build", "push"] and second["inputs_hash"] != first["inputs_hash"]


def test_missing_tags_are_added_in_the_registry_without_a_build(world: Any, service: dict[str, Any]) -> None:
    registry, engines = world
    new_engine(registry, engines)
    first = run(service)
    engines[-1].fresh_next = True
    more = dict(service, tags=[*service["tags"], "extra"])
    preview = run(more, check_mode=True)
    assert preview["actions"] == ["tag"] and preview["pushed_tags"] == ["extra"]
    assert "extra" not in registry.tags["team/svc"]
    done = run(more)
    assert done["changed"] is True and registry.tags["team/svc"]["extra"][0] == first["digest"]
    assert run(more)["changed"] is False


# ---------------------------------------------------------------- base images


def test_pinned_and_written_digests_are_not_looked_up(world: Any, service: dict[str, Any]) -> None:
    registry, engines = world
    new_engine(registry, engines)
    pinned = "sha256:" + "d" * 64
    result = run(dict(service, base_image_digests={BASE_REF: pinned}), check_mode=True)
    assert result["base_images"] == {BASE_REF: pinned}
    Path(service["context"], "Dockerfile").write_text(f"FROM other/image:1@{pinned}\n")
    result = run(service, check_mode=True)
    assert result["base_images"] == {f"other/image:1@{pinned}": pinned}
    assert not [c for c in registry.calls if c[0] == "resolve"]


def test_base_images_are_replaced_then_resolved_with_credentials_only_for_our_registry(
    world: Any, service: dict[str, Any]
) -> None:
    registry, engines = world
    new_engine(registry, engines)
    Path(service["context"], "Dockerfile").write_text("FROM python:3.11 AS b\nFROM b\n")
    result = run(dict(service, base_images={"python:3.11": BASE_REF}), check_mode=True)
    assert result["base_images"] == {BASE_REF: BASE_DIGEST}
    assert ("resolve", REGISTRY, "base/python", "3.11", "ci") in registry.calls
    Path(service["context"], "Dockerfile").write_text("FROM python:3.11\n")
    with pytest.raises(BuildFailure) as err:
        run(service, check_mode=True)
    assert err.value.kind == "base_image"
    assert str(err.value).startswith("service 'svc': base image python:3.11: its digest cannot be resolved")
    assert "pin its digest in base_image_digests" in str(err.value)
    # Docker Hub is asked anonymously: our registry's credentials never go elsewhere
    assert ("resolve", "registry-1.docker.io", "library/python", "3.11", "") in registry.calls


# ---------------------------------------------------------------- build only


def test_push_false_builds_and_tags_locally_only(world: Any, service: dict[str, Any]) -> None:
    registry, engines = world
    engine = new_engine(registry, engines)
    local = dict(service, push=False)
    assert run(local, check_mode=True)["actions"] == ["build"] and mutations(engine) == []
    first = run(local)
    assert first["changed"] is True and first["digest"] == "" and first["reference"] == ""
    assert engine.refs[f"{REGISTRY}/team/svc:local"] == first["image_id"]
    assert registry.tags.get("team/svc") is None
    engine.calls.clear()
    second = run(local)
    assert second["changed"] is False and mutations(engine) == []
    del engine.refs[f"{REGISTRY}/team/svc:local"]  # a tag removed by hand is put back
    assert run(local, check_mode=True)["actions"] == ["tag"]
    assert run(local)["changed"] is True and engine.refs[f"{REGISTRY}/team/svc:local"] == first["image_id"]


# ---------------------------------------------------------------- failures


def test_missing_context_and_dockerfile(world: Any, service: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BuildFailure, match=r"service 'svc': build context .* is not a directory"):
        run(dict(service, context=str(tmp_path / "none")))
    Path(service["context"], "Dockerfile").unlink()
    with pytest.raises(BuildFailure) as err:
        run(service)
    assert err.value.kind == "dockerfile"
    assert (
        str(err.value)
        == f"service 'svc': no Dockerfile at {Path(service['context']) / 'Dockerfile'} and no template for the service"
    )


def test_invalid_tag_names_the_service(world: Any, service: dict[str, Any]) -> None:
    with pytest.raises(BuildFailure, match=r"service 'svc': tag 'bad tag' \(from 'bad tag'\) is not a valid image tag"):
        run(dict(service, tags=["bad tag"]))


def test_the_password_is_no_log() -> None:
    spec = mod.argument_spec()
    assert spec["registry_password"]["no_log"] is True
    assert spec["registry_password"]["fallback"][1] == ["THINKUS_REGISTRY_PASSWORD"]


def test_our_registry_refusing_the_credentials_for_a_base_image_is_a_registry_error(
    world: Any, service: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, _engines = world

    def refuse(repo: str, ref: str) -> str:
        raise _registry.RegistryError(REGISTRY, 401, f"registry {REGISTRY} rejected the credentials of user 'ci'")

    original = registry.client

    def client(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)
        made.resolve = refuse
        return made

    monkeypatch.setattr(mod, "RegistryClient", client)
    with pytest.raises(_registry.RegistryError, match="rejected the credentials of user 'ci'"):
        run(service, check_mode=True)
