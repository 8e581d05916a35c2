#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_build_image
short_description: Build, tag and push one image only when its build inputs changed
version_added: 0.2.0
description:
  - Hashes everything that makes the image - the files of the build context that C(.dockerignore)
    lets through (content, executable bit, symlink target), the Dockerfile, build arguments, target,
    labels, extra files, the git revision and the B(registry digest) of every C(FROM) image - and
    stores the hash in the image label C(ai.thinkus.build.inputs-hash).
  - The hash never depends on the engine that builds. A C(FROM) image enters it by the digest its
    registry holds for the tag (the index digest for multi-platform images), by a digest written in
    the reference (C(name@sha256:...)), or by a digest pinned in O(base_image_digests); never by a
    local image ID. The build then runs C(FROM name@digest), so it uses exactly what was hashed.
  - With O(push=true), asks the registry for the first tag of O(tags). Same hash there and every
    other tag at the same digest - nothing to do, and the engine is not even asked. Tags only missing
    are added in the registry by copying the manifest.
  - Otherwise reuses a local image with the same hash or builds one through the Docker API (classic
    builder, no buildx plugin needed, build cache kept), tags it and pushes every tag with the
    credentials in the C(X-Registry-Auth) header (nothing is written to C(~/.docker)).
  - With O(push=false), builds and tags locally only; an image with the same hash is reused.
author:
  - Thinkus platform team (@thinkus-ai)
extends_documentation_fragment:
  - thinkus.ops.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the context, the registry and the engine only, and returns the actions a real run would
        take. Nothing is pulled, built, tagged or pushed.
  diff_mode:
    support: full
    details:
      - C(before) is what the registry holds for the first tag (digest, inputs hash, tags at that
        digest) or, with O(push=false), the local image with the wanted hash; C(after) is the wanted
        inputs hash and tags.
  idempotent:
    support: full
    details:
      - A second run with the same inputs finds the hash in the registry (or the engine with
        O(push=false)) and changes nothing, also on another build host or an engine without any of
        the images.
  action_group:
    description: Use C(group/thinkus.ops.docker) in C(module_defaults) to set the shared options once.
    support: full
    membership:
      - thinkus.ops.docker
options:
  name:
    description:
      - Name of the service the image is built for; used in messages and returned.
    type: str
    required: true
  context:
    description:
      - Build context directory on the build host.
    type: path
    required: true
  dockerfile:
    description:
      - Path of the service's own Dockerfile, relative to O(context). When it exists it wins over
        O(dockerfile_content).
    type: str
    default: Dockerfile
  dockerfile_content:
    description:
      - Dockerfile text (for example a rendered template) used when the context has no O(dockerfile).
    type: str
  repository:
    description:
      - Repository of the image, with the registry, for example C(registry.example.com/team/api).
        A first part without C(.) or C(:) means Docker Hub.
    type: str
    required: true
  tags:
    description:
      - Tags of the image. C({revision}) and C({short_revision}) are replaced by the revision.
      - The first tag is the one compared with the registry.
    type: list
    elements: str
    required: true
  revision:
    description:
      - Revision of the sources. When not set, the last git commit touching O(context), with
        C(-dirty) appended when the context has uncommitted changes.
    type: str
  build_args:
    description:
      - Build arguments.
    type: dict
    default: {}
  target:
    description:
      - Build stage to stop at.
    type: str
  labels:
    description:
      - Labels of the image (part of the hash).
    type: dict
    default: {}
  source_url:
    description:
      - Value of the label C(org.opencontainers.image.source).
    type: str
    default: ""
  version:
    description:
      - Value of the label C(org.opencontainers.image.version); the short revision when empty.
    type: str
    default: ""
  extra_files:
    description:
      - Files added to the build context (name in the context -> path on the build host), for
        example a CA bundle. Their content is part of the hash.
    type: dict
    default: {}
  base_images:
    description:
      - Replacement of C(FROM) images (upstream reference -> reference to use), in O(dockerfile_content)
        and in the service's own Dockerfile; for a mirror or a local registry.
    type: dict
    default: {}
  base_image_digests:
    description:
      - Digests pinned for C(FROM) images (reference after O(base_images) -> C(sha256:...)). A pinned
        image is not looked up in its registry. Images neither pinned nor written with a digest are
        resolved from their registry; the module fails, naming the image, when that is not possible.
    type: dict
    default: {}
  push:
    description:
      - Push the image. When false the image is built and tagged in the engine only.
    type: bool
    default: true
  registry_username:
    description:
      - User of the registry of O(repository). Also used to resolve base images held by that registry;
        base images of other registries are resolved anonymously.
      - If not set, the value of the E(THINKUS_REGISTRY_USERNAME) environment variable is used.
    type: str
  registry_password:
    description:
      - Password or token of O(registry_username). Never logged, returned or written to disk.
      - If not set, the value of the E(THINKUS_REGISTRY_PASSWORD) environment variable is used.
    type: str
  registry_insecure:
    description:
      - Talk plain HTTP to the registry of O(repository). Only for a registry on the loopback interface.
    type: bool
    default: false
  nocache:
    description:
      - Build without the build cache.
    type: bool
    default: false
  pull:
    description:
      - Ask the engine to pull the C(FROM) images (by digest) at build time even when present.
    type: bool
    default: false
  log_lines:
    description:
      - Lines of build output returned in RV(build_log) when the build fails.
    type: int
    default: 40
  timeout:
    description:
      - Seconds one call to the Docker engine or the registry may take.
    type: int
    default: 600
  docker_host:
    description:
      - Address of the Docker engine API.
      - If not set, the value of the E(DOCKER_HOST) environment variable, else C(unix:///var/run/docker.sock).
    type: str
requirements:
  - docker (Python SDK) on the build host
  - git on the build host, unless O(revision) is set
notes:
  - The Docker engine needs API 1.41 or later; the buildx plugin is not needed.
  - The role C(thinkus.ops.docker_build) builds every service of the platform with this module.
"""

EXAMPLES = r"""
- name: Build and push the API image when its inputs changed
  thinkus.ops.docker_build_image:
    name: api
    context: /src/services/api
    repository: registry.example.com/thinkus/api
    tags: ["{revision}", "{short_revision}", production]
    registry_username: "{{ vault_registry_username }}"
    registry_password: "{{ vault_registry_password }}"
  register: api_image

- name: Deploy exactly what was built
  ansible.builtin.debug:
    msg: "{{ api_image.reference }}"

- name: Base images from a mirror, one of them pinned by digest
  thinkus.ops.docker_build_image:
    name: worker
    context: /src/services/worker
    repository: registry.example.com/thinkus/worker
    tags: ["{revision}"]
    base_images:
      python:3.12-slim: mirror.example.com/library/python:3.12-slim
    base_image_digests:
      mirror.example.com/library/python:3.12-slim: "{{ python_312_slim_digest }}"  # sha256:...
    registry_username: "{{ vault_registry_username }}"
    registry_password: "{{ vault_registry_password }}"

- name: Shared options once for every build
  module_defaults:
    group/thinkus.ops.docker:
      registry_username: "{{ vault_registry_username }}"
      registry_password: "{{ vault_registry_password }}"
  block:
    - name: Build the images, only the local engine
      thinkus.ops.docker_build_image:
        name: "{{ item }}"
        context: "/src/services/{{ item }}"
        repository: "registry.example.com/thinkus/{{ item }}"
        tags: [dev]
        push: false
      loop: [api, worker]
"""

RETURN = r"""
name:
  description: The service name (O(name)).
  returned: always
  type: str
  sample: api
repository:
  description: The repository (O(repository)).
  returned: success
  type: str
  sample: registry.example.com/thinkus/api
actions:
  description:
    - What was (or in check mode would be) done, among V(build), V(push) and V(tag) (tags added in
      the registry by copying the manifest, or locally with O(push=false)). Empty when up to date.
  returned: always
  type: list
  elements: str
  sample: [build, push]
inputs_hash:
  description: The build-input hash (label C(ai.thinkus.build.inputs-hash)).
  returned: success
  type: str
  sample: 5f0c8f4b7a1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbcc
base_images:
  description: Each C(FROM) image (after O(base_images)) and the digest that entered the hash and the build.
  returned: success
  type: dict
  sample: {"python:3.12-slim": "sha256:4ac19a6f3c7c7e2a0e7b6e6fdc07f1c2a3a1cbb7e1a8b9d0c4e5f6a7b8c9d0e1"}
revision:
  description: The revision of the sources.
  returned: success
  type: str
  sample: 0123456789abcdef0123456789abcdef01234567
tags:
  description: The expanded tags.
  returned: success
  type: list
  elements: str
  sample: [0123456789abcdef0123456789abcdef01234567, "0123456", production]
pushed_tags:
  description: Tags pushed or added in the registry by this run (in check mode, those that would be).
  returned: success
  type: list
  elements: str
  sample: [production]
digest:
  description:
    - Digest of the image in the registry. Empty with O(push=false), and in check mode for an image that
      would be built.
  returned: success
  type: str
  sample: sha256:9c1f0e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0
reference:
  description: C(repository@digest), what a deployment should run; empty when RV(digest) is.
  returned: success
  type: str
  sample: registry.example.com/thinkus/api@sha256:9c1f0e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0
image_id:
  description: ID of the local image; empty when the engine was not needed (the registry was up to date).
  returned: success
  type: str
  sample: sha256:1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff0011
dockerfile:
  description: The Dockerfile used, its path or V(template) for O(dockerfile_content).
  returned: success
  type: str
  sample: template
error:
  description:
    - Kind of failure, one of V(context), V(dockerfile), V(tags), V(base_image), V(registry), V(build),
      V(push), V(docker).
  returned: failure
  type: str
  sample: registry
status:
  description: HTTP status of a registry failure (absent when the registry was unreachable).
  returned: failure
  type: int
  sample: 401
build_log:
  description: The last O(log_lines) lines of the build output of a failed build.
  returned: failure
  type: list
  elements: str
  sample: ["Step 3/7 : RUN go build", "go: cannot find main module"]
"""

import datetime
import io
import os
from collections import deque
from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.thinkus.ops.plugins.module_utils._docker_engine import engine_client
from ansible_collections.thinkus.ops.plugins.module_utils._image_build import (
    HAS_DOCKER_SDK,
    INJECTED_DOCKERFILE,
    BuildFailure,
    context_files,
    dockerignore_patterns,
    expand_tags,
    from_images,
    git_revision,
    inputs_hash,
    pinned_reference,
    rewrite_from,
    short_revision,
)
from ansible_collections.thinkus.ops.plugins.module_utils._registry import (
    DIGEST_RE,
    HASH_LABEL,
    RegistryClient,
    RegistryError,
    parse_reference,
    same_registry,
    split_repository,
)

try:
    import docker
    from docker.utils.build import create_archive
except ImportError:  # pragma: no cover - reported by main()
    docker = None


def argument_spec() -> dict[str, Any]:
    return dict(
        name=dict(type="str", required=True),
        context=dict(type="path", required=True),
        dockerfile=dict(type="str", default="Dockerfile"),
        dockerfile_content=dict(type="str"),
        repository=dict(type="str", required=True),
        tags=dict(type="list", elements="str", required=True),
        revision=dict(type="str"),
        build_args=dict(type="dict", default={}),
        target=dict(type="str"),
        labels=dict(type="dict", default={}),
        source_url=dict(type="str", default=""),
        version=dict(type="str", default=""),
        extra_files=dict(type="dict", default={}),
        base_images=dict(type="dict", default={}),
        base_image_digests=dict(type="dict", default={}),
        push=dict(type="bool", default=True),
        registry_username=dict(type="str", fallback=(env_fallback, ["THINKUS_REGISTRY_USERNAME"])),
        registry_password=dict(type="str", no_log=True, fallback=(env_fallback, ["THINKUS_REGISTRY_PASSWORD"])),
        registry_insecure=dict(type="bool", default=False),
        nocache=dict(type="bool", default=False),
        pull=dict(type="bool", default=False),
        log_lines=dict(type="int", default=40),
        timeout=dict(type="int", default=600),
        docker_host=dict(type="str", fallback=(env_fallback, ["DOCKER_HOST"])),
    )


class Engine:
    """The Docker engine, connected on first use: an up-to-date registry never needs it."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._params = params
        self._client: Any = None

    @property
    def api(self) -> Any:
        if self._client is None:
            self._client = engine_client(self._params["docker_host"], self._params["timeout"])
        return self._client

    def image_id(self, ref: str) -> str:
        try:
            return self.api.inspect_image(ref)["Id"]
        except docker.errors.ImageNotFound:
            return ""

    def image_with_hash(self, value: str) -> str:
        images = self.api.images(filters={"label": f"{HASH_LABEL}={value}"})
        return images[0]["Id"] if images else ""


class Builder:
    """Plan (reads only) and apply (the one place that changes the engine or the registry)."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.p = module.params
        self.engine = Engine(self.p)
        self.registry_host, self.repo = split_repository(self.p["repository"])
        self.registry = self._client(self.registry_host)

    def _client(self, host: str) -> RegistryClient:
        if same_registry(host, self.registry_host):
            return RegistryClient(
                host, self.p["registry_username"], self.p["registry_password"], self.p["registry_insecure"],
                self.p["timeout"],
            )  # fmt: skip
        return RegistryClient(host, None, None, False, self.p["timeout"])

    def _fail_service(self, err: BuildFailure) -> BuildFailure:
        return BuildFailure(err.kind, f"service {self.p['name']!r}: {err}", err.log)

    # ------------------------------------------------------------------ plan (read only)

    def read_inputs(self) -> dict[str, Any]:
        p = self.p
        context = os.path.abspath(p["context"])
        if not os.path.isdir(context):
            raise BuildFailure("context", f"service {p['name']!r}: build context {context} is not a directory")
        own = os.path.join(context, p["dockerfile"])
        if os.path.isfile(own):
            with open(own, encoding="utf-8") as handle:
                text = handle.read()
            source = own
        elif p["dockerfile_content"]:
            text, source = p["dockerfile_content"], "template"
        else:
            raise BuildFailure(
                "dockerfile", f"service {p['name']!r}: no Dockerfile at {own} and no template for the service"
            )
        text = rewrite_from(text, {str(k): str(v) for k, v in p["base_images"].items()})
        extra: dict[str, bytes] = {}
        for name, path in sorted(p["extra_files"].items()):
            if not os.path.isfile(path):
                raise BuildFailure("context", f"service {p['name']!r}: extra build file {path} ({name}) does not exist")
            with open(path, "rb") as handle:
                extra[name] = handle.read()
        patterns = dockerignore_patterns(context)
        files = [f for f in context_files(context, patterns) if f not in extra and f != INJECTED_DOCKERFILE]
        try:
            revision = p["revision"] or git_revision(context, self._run)
        except BuildFailure as err:
            raise self._fail_service(err) from None
        return dict(context=context, dockerfile=text, source=source, extra=extra, patterns=patterns, files=files,
                    revision=revision)  # fmt: skip

    def _run(self, argv: list[str]) -> tuple[int, str, str]:
        try:
            return self.module.run_command(argv)
        except OSError as err:  # pragma: no cover - run_command reports a missing binary itself
            return 127, "", str(err)

    def base_digests(self, dockerfile: str, build_args: dict[str, str]) -> dict[str, str]:
        """{FROM image: digest}: written in the reference, pinned, or resolved from its registry."""
        pinned = {str(k): str(v) for k, v in self.p["base_image_digests"].items()}
        out: dict[str, str] = {}
        for ref in from_images(dockerfile, build_args):
            name, tag, digest = parse_reference(ref)
            digest = digest or pinned.get(ref, "")
            if not digest:
                host, repo = split_repository(name)
                try:
                    digest = self._client(host).resolve(repo, tag)
                except RegistryError as err:
                    if err.status in (401, 403) and same_registry(host, self.registry_host):
                        raise  # our registry refuses our credentials: say that, not "base image"
                    raise BuildFailure(
                        "base_image",
                        f"service {self.p['name']!r}: base image {ref}: its digest cannot be resolved ({err}); "
                        "push it to a registry or pin its digest in base_image_digests",
                    ) from None
            if not DIGEST_RE.match(digest):
                raise BuildFailure(
                    "base_image", f"service {self.p['name']!r}: base image {ref}: {digest!r} is not a sha256 digest"
                )
            out[ref] = digest
        return out

    def plan(self) -> dict[str, Any]:
        p = self.p
        inputs = self.read_inputs()
        build_args = {str(k): str(v) for k, v in p["build_args"].items()}
        bases = self.base_digests(inputs["dockerfile"], build_args)
        settings = {
            "build_args": build_args,
            "target": p["target"] or "",
            "labels": p["labels"],
            "bases": bases,
            "revision": inputs["revision"],
            "source": p["source_url"],
            "version": p["version"],
        }
        value = inputs_hash(inputs["context"], inputs["files"], inputs["dockerfile"], settings, inputs["extra"])
        try:
            tags = expand_tags(p["tags"], inputs["revision"])
        except BuildFailure as err:
            raise self._fail_service(err) from None
        if not tags:
            raise BuildFailure("tags", f"service {p['name']!r}: no tags")
        labels = {str(k): str(v) for k, v in p["labels"].items()}
        labels.update(
            {
                HASH_LABEL: value,
                "org.opencontainers.image.source": p["source_url"],
                "org.opencontainers.image.revision": inputs["revision"],
                "org.opencontainers.image.version": p["version"] or short_revision(inputs["revision"]),
            }
        )
        plan = dict(inputs, hash=value, tags=tags, labels=labels, bases=bases, build_args=build_args,
                    actions=[], missing_tags=[], remote=None, local="", before={})  # fmt: skip
        if p["push"]:
            self._plan_against_registry(plan)
        else:
            self._plan_against_engine(plan)
        return plan

    def _plan_against_registry(self, plan: dict[str, Any]) -> None:
        primary = plan["tags"][0]
        remote = self.registry.manifest(self.repo, primary)
        remote_hash = self.registry.labels(self.repo, remote[2]).get(HASH_LABEL, "") if remote else ""
        present = []
        if remote:
            present.append(primary)
            for tag in plan["tags"][1:]:
                found = self.registry.manifest(self.repo, tag, method="HEAD")
                if found and found[0] == remote[0]:
                    present.append(tag)
        plan["before"] = {"digest": remote[0] if remote else "", "inputs_hash": remote_hash, "tags": present}
        if remote and remote_hash == plan["hash"]:
            plan["remote"] = remote
            plan["missing_tags"] = [t for t in plan["tags"] if t not in present]
            if plan["missing_tags"]:
                plan["actions"].append("tag")
            return
        plan["local"] = self.engine.image_with_hash(plan["hash"])
        if not plan["local"]:
            plan["actions"].append("build")
        plan["actions"].append("push")
        plan["missing_tags"] = list(plan["tags"])

    def _plan_against_engine(self, plan: dict[str, Any]) -> None:
        local = self.engine.image_with_hash(plan["hash"])
        plan["local"] = local
        present = [t for t in plan["tags"] if local and self.engine.image_id(f"{self.p['repository']}:{t}") == local]
        plan["before"] = {"image_id": local, "inputs_hash": plan["hash"] if local else "", "tags": present}
        plan["missing_tags"] = [t for t in plan["tags"] if t not in present]
        if not local:
            plan["actions"].append("build")
        elif plan["missing_tags"]:
            plan["actions"].append("tag")

    # ------------------------------------------------------------------ apply (changes)

    def apply(self, plan: dict[str, Any]) -> dict[str, Any]:
        """Pull bases, build, tag and push as planned. Returns digest and image_id."""
        if plan["remote"] is not None:  # the registry holds the image: add the missing tags there
            digest, media_type, body = plan["remote"]
            for tag in plan["missing_tags"]:
                self.registry.put_manifest(self.repo, tag, media_type, body)
            return {"digest": digest, "image_id": ""}
        local = plan["local"]
        if not local:
            self._ensure_bases(plan["bases"])
            local = self._build(plan)
        for tag in plan["tags"]:
            if self.engine.image_id(f"{self.p['repository']}:{tag}") != local:
                self.engine.api.tag(local, self.p["repository"], tag, force=True)
        digest = ""
        if self.p["push"]:
            for tag in plan["tags"]:
                digest = self._push(tag) or digest
        return {"digest": digest, "image_id": local}

    def _auth(self) -> dict[str, str] | None:
        if not self.p["registry_username"]:
            return None
        return {"username": self.p["registry_username"], "password": self.p["registry_password"] or ""}

    def _ensure_bases(self, bases: dict[str, str]) -> None:
        """Pull each FROM image by digest unless the engine has it (credentials only for our registry)."""
        for ref, digest in bases.items():
            pinned = pinned_reference(ref, digest)
            if self.engine.image_id(pinned):
                continue
            name = pinned.partition("@")[0]
            host = split_repository(name)[0]
            auth = self._auth() if same_registry(host, self.registry_host) else None
            for chunk in self.engine.api.pull(name, tag=digest, stream=True, decode=True, auth_config=auth):
                if "error" in chunk:
                    raise BuildFailure("docker", f"pulling base image {pinned} failed: {chunk['error'].strip()}")

    def _archive(self, plan: dict[str, Any]) -> io.BytesIO:
        pins = {ref: pinned_reference(ref, digest) for ref, digest in plan["bases"].items()}
        dockerfile = rewrite_from(plan["dockerfile"], pins)
        ignore = [*plan["patterns"], INJECTED_DOCKERFILE, ".dockerignore"]
        extra = [(INJECTED_DOCKERFILE, dockerfile), (".dockerignore", "\n".join(ignore))]
        extra += [(name, content.decode("utf-8")) for name, content in plan["extra"].items()]
        files = [f for f in plan["files"] if f != ".dockerignore"]
        return create_archive(root=plan["context"], files=files, fileobj=io.BytesIO(), extra_files=extra)

    def _build(self, plan: dict[str, Any]) -> str:
        p = self.p
        pins = {ref: pinned_reference(ref, digest) for ref, digest in plan["bases"].items()}
        labels = dict(plan["labels"], **{"org.opencontainers.image.created": _now()})
        log: deque[str] = deque(maxlen=max(p["log_lines"], 1))
        pending = ""
        built = ""
        stream = self.engine.api.build(
            fileobj=self._archive(plan),
            custom_context=True,
            dockerfile=INJECTED_DOCKERFILE,
            tag=f"{p['repository']}:{plan['tags'][0]}",
            buildargs={k: pins.get(v, v) for k, v in plan["build_args"].items()},
            target=p["target"] or None,
            labels=labels,
            nocache=p["nocache"],
            pull=p["pull"],
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "stream" in chunk:
                pending += chunk["stream"]
                *lines, pending = pending.split("\n")
                log.extend(line for line in lines if line.strip())
            if "aux" in chunk and "ID" in chunk["aux"]:
                built = chunk["aux"]["ID"]
            if "error" in chunk:
                if pending.strip():
                    log.append(pending)
                log.append(chunk["error"].strip())
                raise BuildFailure(
                    "build", f"building the image of service {p['name']!r} failed: {chunk['error'].strip()}", list(log)
                )
        return built or self.engine.image_id(f"{p['repository']}:{plan['tags'][0]}")

    def _push(self, tag: str) -> str:
        digest = ""
        repository = self.p["repository"]
        for chunk in self.engine.api.push(repository, tag=tag, auth_config=self._auth(), stream=True, decode=True):
            if "error" in chunk:
                raise BuildFailure("push", f"pushing {repository}:{tag} failed: {chunk['error'].strip()}")
            digest = (chunk.get("aux") or {}).get("Digest", digest)
        return digest


def _now() -> str:
    utc = datetime.timezone.utc  # noqa: UP017 - build hosts may run Python < 3.11
    return datetime.datetime.now(utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(module: AnsibleModule) -> dict[str, Any]:
    builder = Builder(module)
    plan = builder.plan()
    p = module.params
    result: dict[str, Any] = dict(
        name=p["name"], repository=p["repository"], inputs_hash=plan["hash"], base_images=plan["bases"],
        revision=plan["revision"], tags=plan["tags"], dockerfile=plan["source"], actions=plan["actions"],
        pushed_tags=plan["missing_tags"] if p["push"] and plan["actions"] else [],
        digest=plan["remote"][0] if plan["remote"] else "", image_id=plan["local"],
    )  # fmt: skip
    if plan["actions"] and not module.check_mode:  # the only place that changes anything
        done = builder.apply(plan)
        result["digest"] = done["digest"] or result["digest"]
        result["image_id"] = done["image_id"] or result["image_id"]
    if module._diff:
        # after: the digest once known (up to date, tags added, or pushed by this run)
        after = {"inputs_hash": plan["hash"], "tags": plan["tags"]}
        if result["digest"]:
            after = {"digest": result["digest"], **after}
        elif not p["push"] and result["image_id"]:
            after = {"image_id": result["image_id"], **after}
        result["diff"] = dict(before=plan["before"], after=after)
    result["reference"] = f"{p['repository']}@{result['digest']}" if result["digest"] else ""
    result["changed"] = bool(plan["actions"])
    return result


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(argument_spec=argument_spec(), supports_check_mode=True)


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    if docker is None or not HAS_DOCKER_SDK:
        module.fail_json(msg=missing_required_lib("docker"), name=module.params["name"], error="docker", actions=[])
    name = module.params["name"]
    try:
        result = run(module)
    except BuildFailure as err:
        module.fail_json(msg=str(err), name=name, error=err.kind, build_log=err.log, actions=[])
    except RegistryError as err:
        module.fail_json(msg=f"service {name!r}: {err}", name=name, error="registry", status=err.status, actions=[])
    except docker.errors.DockerException as err:
        module.fail_json(msg=f"service {name!r}: Docker engine error: {err}", name=name, error="docker", actions=[])
    module.exit_json(**result)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
