# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Integration tests of the thinkus.ops.docker_build role against the local Docker engine and registry.

Each test copies the sample services into a git repository of its own under tmp_path, runs the
role through ansible-playbook with inventories/local (the real registry credentials come from
there), and asserts what the registry and the engine then hold. Repositories live under
thinkus-test-docker-build/it-<random>/ and are deleted afterwards (manifests in the registry,
images in the engine).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from ansible_collections.thinkus.ops.tests.support.ansible import REPO_ROOT, PlaybookResult, run_playbook
from ansible_collections.thinkus.ops.tests.support.registry import RegistryReader as Registry
from tools.localenv import _secrets
from tools.localenv import images as base_images
from tools.localenv._proc import Context

pytestmark = [pytest.mark.localenv, pytest.mark.slow]

REGISTRY = "127.0.0.1:5000"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "services"
HASH_LABEL = "ai.thinkus.build.inputs-hash"


@pytest.fixture(scope="module")
def registry() -> Registry:
    creds = _secrets.load(Context())
    reg = Registry(REGISTRY, creds["registry_username"], creds["registry_password"])
    status = reg.call("GET", "/v2/")[0]
    assert status == 200, f"the local registry at {REGISTRY} does not answer (make local-up): HTTP {status}"
    # builds take FROM images by registry digest: the stand-ins must be in the registry (make
    # local-up pushes them; idempotent here for an environment brought up before that)
    base_images.publish(REGISTRY, reg.username, reg.password)
    return reg


@pytest.fixture
def prefix(registry: Registry) -> Iterator[str]:
    """A repository prefix of this test; its repositories and local images are removed afterwards."""
    name = f"thinkus-test-docker-build/it-{secrets.token_hex(4)}"
    yield name
    client = docker.from_env()
    for image in client.images.list():
        if any(tag.startswith(f"{REGISTRY}/{name}/") for tag in image.tags):
            client.images.remove(image.id, force=True)
    for service in ("go-orchestrator", "py-ai-engine", "worker", "broken", "custom"):
        registry.delete_repo(f"{name}/{service}")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """The sample services in a git repository of their own (one commit)."""
    root = tmp_path / "services"
    shutil.copytree(FIXTURES, root)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "sample services")
    return root


def run_role(tmp_path: Path, services: list[dict[str, Any]], sources: Path, **extra: Any) -> PlaybookResult:
    playbook = tmp_path / "build.yml"
    playbook.write_text(
        "---\n- name: Build\n  hosts: thinkus\n  gather_facts: false\n  roles:\n    - role: thinkus.ops.docker_build\n"
    )
    extra_vars = {
        "docker_build_services": services,
        "docker_build_source_dir": str(sources),
        "docker_build_artifacts_dir": str(tmp_path / "artifacts"),
        # the compose file names the seed's services; test_compose_file_is_validated covers it
        "docker_build_compose_enabled": False,
        **extra.pop("extra_vars", {}),
    }
    return run_playbook(playbook, extra_vars=extra_vars, inventory="inventories/local", **extra)


def services_for(prefix: str, *names: str) -> list[dict[str, Any]]:
    known = {
        "go-orchestrator": {"template": "go", "go_package": "./cmd", "ports": [8080]},
        "worker": {"template": "python", "ports": [8001], "command": ["python", "-m", "worker"]},
    }
    return [{"name": n, "repository": f"{prefix}/{n}", **known[n]} for n in names]


def task(result: PlaybookResult, name: str) -> dict[str, Any]:
    return result.task(f"thinkus.ops.docker_build : {name}")


def results(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "artifacts" / "docker_build_results.json").read_text())


def test_check_mode_then_build_then_one_file_change(
    tmp_path: Path, sources: Path, prefix: str, registry: Registry
) -> None:
    services = services_for(prefix, "go-orchestrator", "worker")
    go_repo, worker_repo = f"{prefix}/go-orchestrator", f"{prefix}/worker"

    # check mode on an empty registry: both would be built and pushed, nothing is
    preview = run_role(tmp_path, services, sources, check=True, json_output=True)
    assert preview.rc == 0, preview.output
    report = task(preview, "Report the plan")["msg"]
    assert any(line.startswith("go-orchestrator: would build + push") for line in report), report
    assert any(line.startswith("worker: would build + push") for line in report), report
    assert task(preview, "Build, tag and push the changed images")["changed"] is True
    assert registry.tags(go_repo) == [] and registry.tags(worker_repo) == []
    assert not docker.from_env().images.list(filters={"reference": f"{REGISTRY}/{prefix}/*"})

    # real run: both built and pushed with the revision, short revision, environment and latest tags
    first = run_role(tmp_path, services, sources, json_output=True)
    assert first.rc == 0, first.output
    head = git(sources, "rev-parse", "HEAD")
    expected_tags = sorted([head, head[:7], "local", "latest"])
    assert registry.tags(go_repo) == expected_tags
    assert registry.tags(worker_repo) == expected_tags
    built = results(tmp_path)
    go_digest = registry.digest(go_repo, head)
    worker_digest = registry.digest(worker_repo, head)
    assert built["images"] == {
        "go-orchestrator": f"{REGISTRY}/{go_repo}@{go_digest}",
        "worker": f"{REGISTRY}/{worker_repo}@{worker_digest}",
    }
    assert all(registry.digest(go_repo, tag) == go_digest for tag in expected_tags)
    labels = registry.labels(go_repo, head)
    assert labels[HASH_LABEL] == built["details"]["go-orchestrator"]["inputs_hash"]
    assert labels["org.opencontainers.image.revision"] == head

    # second run, at -vvvv: nothing built, nothing pushed, no password in the output
    second = run_role(tmp_path, services, sources, json_output=True, verbosity=4)
    assert second.rc == 0, second.output
    assert registry.password not in second.output
    assert second.stats["localhost"]["changed"] == 0, second.output
    assert task(second, "Build, tag and push the changed images").get("skipped") is True

    # one source file of one service changes (and is committed)
    main_go = sources / "go-orchestrator" / "cmd" / "main.go"
    main_go.write_text(main_go.read_text().replace('"status":"ok"', '"status":"ok","v":2'))
    git(sources, "commit", "-q", "-am", "orchestrator v2")
    new_head = git(sources, "rev-parse", "HEAD")

    preview = run_role(tmp_path, services, sources, check=True, json_output=True)
    assert preview.rc == 0, preview.output
    report = task(preview, "Report the plan")["msg"]
    assert any(line.startswith("go-orchestrator: would build + push") for line in report), report
    assert any(line.startswith("worker: up to date at") for line in report), report
    assert registry.digest(go_repo, "local") == go_digest  # check mode pushed nothing

    third = run_role(tmp_path, services, sources, json_output=True)
    assert third.rc == 0, third.output
    assert task(third, "Record the built images")["ansible_facts"]["docker_build_changed"] == ["go-orchestrator"]
    new_go_digest = registry.digest(go_repo, new_head)
    assert new_go_digest and new_go_digest != go_digest
    assert registry.digest(go_repo, "local") == new_go_digest
    assert registry.digest(go_repo, head) == go_digest  # the old revision's tag stays
    assert registry.tags(worker_repo) == expected_tags  # worker: last commit touching it is unchanged
    assert registry.digest(worker_repo, "local") == worker_digest
    assert results(tmp_path)["images"]["go-orchestrator"] == f"{REGISTRY}/{go_repo}@{new_go_digest}"


def test_registry_auth_failure_names_registry_and_status_never_the_password(
    tmp_path: Path, sources: Path, prefix: str, registry: Registry
) -> None:
    wrong = "wrong-" + secrets.token_hex(12)
    result = run_role(
        tmp_path,
        services_for(prefix, "worker"),
        sources,
        verbosity=3,
        extra_vars={"docker_build_registry_password": wrong},
    )
    assert result.rc != 0
    assert f"registry {REGISTRY} rejected the credentials of user '{registry.username}': HTTP 401" in result.output
    assert wrong not in result.output
    assert registry.password not in result.output
    assert registry.tags(f"{prefix}/worker") == []
    assert not docker.from_env().images.list(filters={"reference": f"{REGISTRY}/{prefix}/*"})


def test_missing_context_and_dockerfile_fail_before_any_build(
    tmp_path: Path, sources: Path, prefix: str, registry: Registry
) -> None:
    (sources / "no-dockerfile").mkdir()
    services = [
        *services_for(prefix, "worker"),
        {"name": "ghost", "repository": f"{prefix}/ghost", "template": "go"},
        {"name": "no-dockerfile", "repository": f"{prefix}/no-dockerfile"},
    ]
    result = run_role(tmp_path, services, sources)
    assert result.rc != 0
    assert f"service 'ghost': build context {sources / 'ghost'} is not a directory" in result.output
    assert f"service 'no-dockerfile': no Dockerfile at {sources / 'no-dockerfile' / 'Dockerfile'}" in result.output
    assert registry.tags(f"{prefix}/worker") == []  # the valid service was not built either
    assert not docker.from_env().images.list(filters={"reference": f"{REGISTRY}/{prefix}/*"})


def test_bad_input_is_named(tmp_path: Path, sources: Path, prefix: str) -> None:
    services = [{"name": "worker", "template": "rust", "repository": f"{prefix}/worker"}]
    result = run_role(tmp_path, services, sources)
    assert result.rc != 0
    assert "docker_build_services[worker]: template must be one of ['go', 'python']" in result.output


def test_build_failure_shows_service_and_last_40_lines(
    tmp_path: Path, sources: Path, prefix: str, registry: Registry
) -> None:
    broken = sources / "broken"
    broken.mkdir()
    (broken / "Dockerfile").write_text(
        "FROM python:3.12-slim\nRUN for i in $(seq 1 60); do echo build-line-$i; done; exit 3\n"
    )
    git(sources, "add", "-A")
    git(sources, "commit", "-q", "-m", "broken")
    services = [{"name": "broken", "repository": f"{prefix}/broken"}, *services_for(prefix, "worker")]
    result = run_role(tmp_path, services, sources)
    assert result.rc != 0
    assert "building the image of service 'broken' failed" in result.output
    assert "last 40 lines of the build output of broken" in result.output
    assert "build-line-60" in result.output and "build-line-25" in result.output
    assert "build-line-5\n" not in result.output and "build-line-15\n" not in result.output
    assert registry.tags(f"{prefix}/broken") == []
    assert registry.tags(f"{prefix}/worker") == []  # a real run stops at the first failure


def test_own_dockerfile_wins_over_the_template_and_build_only(tmp_path: Path, sources: Path, prefix: str) -> None:
    custom = sources / "custom"
    custom.mkdir()
    (custom / "requirements.txt").write_text("")
    (custom / "Dockerfile").write_text('FROM python:3.12-slim\nLABEL thinkus.test/own="yes"\nCMD ["true"]\n')
    git(sources, "add", "-A")
    git(sources, "commit", "-q", "-m", "custom")
    services = [{"name": "custom", "template": "python", "repository": f"{prefix}/custom"}]
    first = run_role(tmp_path, services, sources, extra_vars={"docker_build_push": False})
    assert first.rc == 0, first.output
    image = docker.from_env().images.get(f"{REGISTRY}/{prefix}/custom:local")
    assert image.labels["thinkus.test/own"] == "yes"
    assert image.attrs["Config"]["Cmd"] == ["true"]
    again = run_role(tmp_path, services, sources, extra_vars={"docker_build_push": False}, json_output=True)
    assert again.rc == 0, again.output
    assert again.stats["localhost"]["changed"] == 0


def test_compose_file_is_validated(tmp_path: Path, sources: Path, prefix: str) -> None:
    extra = {
        "docker_build_compose_enabled": True,
        "docker_build_push": False,
        "docker_build_compose_extra_services": {"redis": {"image": "redis:7-alpine", "ports": "not-a-list"}},
        "docker_build_compose_volumes": [],
    }
    result = run_role(tmp_path, services_for(prefix, "worker"), sources, extra_vars=extra)
    assert result.rc != 0
    flat = " ".join(result.output.split())
    assert "docker-compose.yml: docker-compose rejected it" in flat, result.output[-3000:]
    assert "services.redis.ports contains an invalid type" in flat
    assert "Nothing was written." in flat
    # one step for both files: the image references are not written either
    assert not (tmp_path / "artifacts" / "docker-compose.yml").exists()
    assert not list((tmp_path / "artifacts").glob("*.json"))


def _base_refs_in_registry() -> list[str]:
    """The local references of the stand-in base images as the registry holds them (tag and digest)."""
    refs = []
    for image in docker.from_env().images.list():
        every = image.tags + image.attrs.get("RepoDigests", [])
        refs += [r for r in every if r.startswith(f"{REGISTRY}/thinkus-base/")]
    return refs


def _ours(prefix: str) -> dict[str, str]:
    """Image ID -> labels' inputs hash of every local image under this test's repositories."""
    found = docker.from_env().images.list(filters={"reference": f"{REGISTRY}/{prefix}/*"})
    return {image.id: image.labels.get(HASH_LABEL, "") for image in found}


def _registry_state(registry: Registry, repos: list[str]) -> dict[str, dict[str, str]]:
    return {repo: {tag: registry.digest(repo, tag) for tag in registry.tags(repo)} for repo in repos}


def test_second_run_on_a_fresh_engine_builds_nothing(
    tmp_path: Path, sources: Path, prefix: str, registry: Registry
) -> None:
    """Build and push, then run again on two other engine states: nothing built, pulled or pushed."""
    client = docker.from_env()
    services = services_for(prefix, "go-orchestrator", "worker")
    repos = [f"{prefix}/go-orchestrator", f"{prefix}/worker"]
    first = run_role(tmp_path, services, sources, json_output=True)
    assert first.rc == 0, first.output
    pushed = _registry_state(registry, repos)
    built = results(tmp_path)
    assert all(len(tags) == 4 and len(set(tags.values())) == 1 for tags in pushed.values()), pushed
    assert set(_ours(prefix).values()) == {d["inputs_hash"] for d in built["details"].values()}

    try:
        # engine state 1, "fresh": none of the built images, and none of the base images as
        # pulled from the registry (the old hash then read "absent" for them and rebuilt)
        for image_id in _ours(prefix):
            client.images.remove(image_id, force=True)
        for ref in _base_refs_in_registry():
            # only the reference: the local stand-in stays. Removing the last tag of a repository
            # also removes its digest reference, hence the ImageNotFound
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(ref)
        assert _ours(prefix) == {} and _base_refs_in_registry() == []

        fresh = run_role(tmp_path, services, sources, json_output=True)
        assert fresh.rc == 0, fresh.output
        assert fresh.stats["localhost"]["changed"] == 0, fresh.output
        assert task(fresh, "Build, tag and push the changed images").get("skipped") is True
        assert _registry_state(registry, repos) == pushed  # nothing pushed, no tag moved
        assert results(tmp_path)["images"] == built["images"]
        assert results(tmp_path)["details"] == built["details"]  # the same inputs hash
        assert _ours(prefix) == {} and _base_refs_in_registry() == []  # nothing built or pulled

        # engine state 2: the images pulled from the registry by digest, not built here
        auth = {"username": registry.username, "password": registry.password}
        for reference in built["images"].values():
            client.api.pull(reference, auth_config=auth)
        pulled = _ours(prefix)
        assert len(pulled) == 2

        again = run_role(tmp_path, services, sources, json_output=True)
        assert again.rc == 0, again.output
        assert again.stats["localhost"]["changed"] == 0, again.output
        assert task(again, "Build, tag and push the changed images").get("skipped") is True
        assert _registry_state(registry, repos) == pushed
        assert results(tmp_path)["images"] == built["images"]
        assert _ours(prefix) == pulled  # no image built next to the pulled ones
    finally:
        for image_id in _ours(prefix):  # pulled by digest: no tag for the fixture to find
            client.images.remove(image_id, force=True)
        base_images.publish(REGISTRY, registry.username, registry.password)
