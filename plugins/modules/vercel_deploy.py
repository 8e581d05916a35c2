#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vercel_deploy
short_description: Deploy, promote and roll back a Vercel project
version_added: 0.1.0
description:
  - Creates a Vercel deployment from a prebuilt output directory or from a Git commit, waits until
    it is ready, and returns it.
  - Does nothing when a C(READY) deployment of the same project, target, commit and (for O(path))
    file set already exists, found through the deployment C(meta) the module records.
  - Promotes a deployment to production, or rolls production back to an earlier deployment.
  - Only the files Vercel does not hold yet are uploaded (Vercel answers the create call with the
    SHA1 digests it is missing; those files are uploaded and the call is repeated).
  - A create call that ends in a 5xx answer or a timeout may still have created the deployment.
    Before trying again the module looks the deployment up by its C(meta) (C(commitSha) and
    C(sourceDigest)) and only creates one if none is found.
  - A promote or rollback is an alias job on Vercel's side. The module waits on the job status
    Vercel reports for the project (C(lastAliasRequest.jobStatus)), as the official CLI does, and
    fails as soon as the job fails, naming the aliases Vercel could not move.
author:
  - Thinkus platform team (@thinkus-ai)
extends_documentation_fragment:
  - thinkus.ops.vercel
  - thinkus.ops.attributes
  - thinkus.ops.vercel.action_group
attributes:
  check_mode:
    support: full
    details:
      - Makes read requests only. Reports whether a deployment would be created and the files it
        would offer to Vercel (count and bytes); Vercel may already hold some of them, so the real
        run can upload fewer.
  diff_mode:
    support: full
  idempotent:
    support: full
    details:
      - A deployment is identified by project, target, O(commit_sha) (or O(git_source.sha)) and the
        digest of the files under O(path); the same inputs find the existing deployment.
      - O(state=rolled_back) without O(deployment) targets the production deployment before the
        latest one, so running it twice rolls back once.
      - A create call retried after a 5xx or a timeout never makes a second deployment of the
        same build when the first call created one (it is found by its C(meta)).
      - After a rollback, O(state=present) with the rolled-back commit finds its deployment and changes
        nothing; use O(state=promoted) to move production forward again.
options:
  project:
    description:
      - Name or id of the Vercel project.
    type: str
    required: true
  state:
    description:
      - V(present) creates the deployment unless an equal ready one exists.
      - V(promoted) points production traffic at a deployment (O(deployment), or the ready
        deployment of O(commit_sha) or O(git_source.sha)).
      - V(rolled_back) points production traffic back at O(deployment), by default the production
        deployment created before the latest one.
    type: str
    choices: [present, promoted, rolled_back]
    default: present
  path:
    description:
      - Directory with the files to deploy, for example the output of C(vercel build).
      - File names are sent relative to this directory.
      - Mutually exclusive with O(git_source). Requires O(commit_sha).
    type: path
  git_source:
    description:
      - Deploy a Git commit that Vercel fetches itself.
      - Mutually exclusive with O(path).
    type: dict
    suboptions:
      type:
        description:
          - The Git provider. Each takes its own fields, as in Vercel's C(gitSource) reference;
            the module fails before any request when a field of another provider is set.
          - V(github) takes O(git_source.org) and O(git_source.repo), or O(git_source.repo_id).
          - V(gitlab) takes O(git_source.project_id).
          - V(bitbucket) takes O(git_source.owner) and O(git_source.slug), or
            O(git_source.repo_uuid) (and optionally O(git_source.workspace_uuid)).
        type: str
        choices: [github, gitlab, bitbucket]
        default: github
      org:
        description:
          - GitHub organisation or user owning the repository. Use with O(git_source.repo).
        type: str
      repo:
        description:
          - GitHub repository name. Use with O(git_source.org).
        type: str
      repo_id:
        description:
          - GitHub repository id, instead of O(git_source.org) and O(git_source.repo).
        type: str
      project_id:
        description:
          - GitLab project id. Required with O(git_source.type=gitlab).
        type: str
      owner:
        description:
          - Bitbucket workspace (owner) of the repository. Use with O(git_source.slug).
        type: str
      slug:
        description:
          - Bitbucket repository slug. Use with O(git_source.owner).
        type: str
      repo_uuid:
        description:
          - Bitbucket repository UUID, instead of O(git_source.owner) and O(git_source.slug).
        type: str
      workspace_uuid:
        description:
          - Bitbucket workspace UUID. Only with O(git_source.repo_uuid).
        type: str
      ref:
        description:
          - Branch or tag the commit belongs to.
        type: str
        required: true
      sha:
        description:
          - Full commit SHA to deploy. Recorded in the deployment meta.
        type: str
        required: true
  commit_sha:
    description:
      - Commit the files under O(path) were built from. Recorded in the deployment meta as C(commitSha).
      - Required with O(path). With O(state=promoted), selects the deployment to promote.
    type: str
  target:
    description:
      - V(production), V(preview) or the slug or id of a custom environment.
    type: str
    default: preview
  meta:
    description:
      - Extra metadata stored on the deployment. The module adds C(commitSha), and C(sourceDigest) for O(path).
    type: dict
    default: {}
  deployment:
    description:
      - Id or URL of the deployment to promote or roll back to.
    type: str
  wait:
    description:
      - Wait until the deployment is C(READY) and, for production, its alias is assigned.
      - Fails when the deployment ends in C(ERROR) or C(CANCELED), or reports an error code.
      - With O(state=promoted) or O(state=rolled_back), wait until Vercel's alias job succeeds;
        fails as soon as it reports C(failed).
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait for the deployment.
    type: int
    default: 600
  poll_interval:
    description:
      - Seconds between two status requests while waiting.
    type: float
    default: 3
  upload_concurrency:
    description:
      - How many files are uploaded at the same time.
    type: int
    default: 8
seealso:
  - module: thinkus.ops.vercel_env
  - name: Vercel REST API
    description: Reference of the endpoints this module calls.
    link: https://vercel.com/docs/rest-api
"""

EXAMPLES = r"""
- name: Deploy the built frontend to production and wait for the alias
  thinkus.ops.vercel_deploy:
    project: thinkus-web
    path: "{{ frontend_build_dir }}/.vercel/output"
    commit_sha: "{{ frontend_commit_sha }}"
    target: production
    meta:
      pipeline: ansible
  register: __frontend_deploy

- name: Deploy a Git commit as a preview
  thinkus.ops.vercel_deploy:
    project: thinkus-web
    git_source:
      org: thinkus-ai
      repo: thinkus-web
      ref: main
      sha: 2f1c9b7d0e6a4c3b8a9f1e2d3c4b5a6978877665
    target: preview

- name: Deploy a GitLab commit (GitLab takes the numeric project id)
  thinkus.ops.vercel_deploy:
    project: thinkus-web
    git_source:
      type: gitlab
      project_id: "48151623"
      ref: main
      sha: 2f1c9b7d0e6a4c3b8a9f1e2d3c4b5a6978877665

- name: Deploy a Bitbucket commit (Bitbucket takes the workspace and the repository slug)
  thinkus.ops.vercel_deploy:
    project: thinkus-web
    git_source:
      type: bitbucket
      owner: thinkus-ai
      slug: thinkus-web
      ref: main
      sha: 2f1c9b7d0e6a4c3b8a9f1e2d3c4b5a6978877665

- name: Promote the deployment of a commit to production
  thinkus.ops.vercel_deploy:
    project: thinkus-web
    state: promoted
    commit_sha: "{{ frontend_commit_sha }}"

- name: Roll production back to the deployment before the latest one
  thinkus.ops.vercel_deploy:
    project: thinkus-web
    state: rolled_back

- name: Share the token and team once for every Vercel task
  module_defaults:
    group/thinkus.ops.vercel:
      team_id: "{{ vercel_team_id }}"
  block:
    - name: Deploy
      thinkus.ops.vercel_deploy:
        project: thinkus-web
        path: build/output
        commit_sha: "{{ frontend_commit_sha }}"
"""

RETURN = r"""
deployment:
  description: The deployment created, found, promoted or rolled back to. Empty in check mode when none exists yet.
  returned: success
  type: dict
  contains:
    id:
      description: Deployment id.
      type: str
      sample: dpl_89qyp1cskzkLrVicDaZoDbjyHuDJ
    url:
      description: The unique host name of the deployment.
      type: str
      sample: thinkus-web-4fe2a1b0.vercel.app
    readyState:
      description: Build state, C(READY) once the deployment serves traffic.
      type: str
      sample: READY
    aliasAssigned:
      description: Whether the production alias points at the deployment.
      type: bool
    aliases:
      description: Aliases of the deployment.
      type: list
      elements: str
      sample: [thinkus-web.vercel.app]
    target:
      description: Target of the deployment, C(production) or null for a preview.
      type: str
    inspectorUrl:
      description: Link to the deployment in the Vercel dashboard.
      type: str
    meta:
      description: Metadata of the deployment, including C(commitSha).
      type: dict
deployed:
  description: Whether a new deployment was (or, in check mode, would be) created.
  returned: O(state=present)
  type: bool
files_total:
  description: Number of files under O(path).
  returned: O(state=present) and O(path) is set
  type: int
  sample: 42
bytes_total:
  description: Total size in bytes of the files under O(path).
  returned: O(state=present) and O(path) is set
  type: int
uploaded:
  description: Whether files were uploaded.
  returned: O(state=present)
  type: bool
files_uploaded:
  description:
    - Number of files uploaded. In check mode, the number of files that would be offered to Vercel.
  returned: O(state=present)
  type: int
  sample: 1
bytes_uploaded:
  description: Bytes uploaded (in check mode, the bytes that would be offered).
  returned: O(state=present)
  type: int
uploaded_files:
  description: Relative names of the files uploaded (in check mode, that would be offered).
  returned: O(state=present)
  type: list
  elements: str
  sample: [static/app.js]
production_before:
  description: Id of the production deployment before a promote or rollback.
  returned: O(state=promoted) or O(state=rolled_back)
  type: str
"""

import os
import random
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.thinkus.ops.plugins.module_utils._vercel import (
    FAILED_STATES,
    LocalFile,
    VercelAPIError,
    VercelClient,
    VercelError,
    alias_job_failure,
    alias_job_status,
    backoff_delay,
    client_from_module,
    deployment_failure,
    deployment_state,
    deployment_status,
    files_payload,
    scan_directory,
    source_digest,
    vercel_argument_spec,
)

# The gitSource fields of each provider (POST /v13/deployments reference): option -> API field,
# and the combinations that identify a repository.
GIT_FIELDS = {
    "github": {"org": "org", "repo": "repo", "repo_id": "repoId"},
    "gitlab": {"project_id": "projectId"},
    "bitbucket": {"owner": "owner", "slug": "slug", "repo_uuid": "repoUuid", "workspace_uuid": "workspaceUuid"},
}
GIT_SHAPES = {
    "github": ({"repo_id"}, {"org", "repo"}),
    "gitlab": ({"project_id"},),
    "bitbucket": ({"repo_uuid", "workspace_uuid"}, {"repo_uuid"}, {"owner", "slug"}),
}


def summarize(deployment: dict[str, Any] | None) -> dict[str, Any]:
    """The part of a deployment the module returns (list entries carry ``uid`` instead of ``id``)."""
    if not deployment:
        return {}
    return dict(
        id=deployment.get("id") or deployment.get("uid"),
        url=deployment.get("url"),
        readyState=deployment.get("readyState") or deployment.get("state"),
        aliasAssigned=bool(deployment.get("aliasAssigned")),
        aliases=list(deployment.get("alias") or []),
        target=deployment.get("target"),
        inspectorUrl=deployment.get("inspectorUrl"),
        meta=dict(deployment.get("meta") or {}),
    )


def build_meta(params: dict[str, Any], digest: str | None) -> dict[str, str]:
    meta = {str(k): str(v) for k, v in (params["meta"] or {}).items()}
    sha = params["git_source"]["sha"] if params["git_source"] else params["commit_sha"]
    if sha:
        meta["commitSha"] = sha
    if digest:
        meta["sourceDigest"] = digest
    return meta


def identity_meta(meta: dict[str, str]) -> dict[str, str]:
    return {k: meta[k] for k in ("commitSha", "sourceDigest") if k in meta}


def git_source_errors(git: dict[str, Any]) -> list[str]:
    """What is wrong with ``git_source`` for its provider; empty when it is usable."""
    provider = git["type"]
    given = {name for names in GIT_FIELDS.values() for name in names if git.get(name)}
    foreign = sorted(given - set(GIT_FIELDS[provider]))
    errors = []
    if foreign:
        errors.append(f"git_source.type={provider} does not take {', '.join(foreign)}.")
    if given & set(GIT_FIELDS[provider]) not in GIT_SHAPES[provider]:
        shapes = " or ".join(" and ".join(sorted(shape)) for shape in GIT_SHAPES[provider])
        errors.append(f"git_source.type={provider} needs {shapes}.")
    return errors


def git_source_body(git: dict[str, Any]) -> dict[str, Any]:
    """The ``gitSource`` of POST /v13/deployments, with the fields of ``git['type']`` only."""
    body: dict[str, Any] = {"type": git["type"], "ref": git["ref"], "sha": git["sha"]}
    fields = GIT_FIELDS[git["type"]]
    for shape in GIT_SHAPES[git["type"]]:
        if all(git.get(option) for option in shape):
            body.update({fields[option]: git[option] for option in sorted(shape)})
            break
    return body


def validate(module: AnsibleModule) -> list[LocalFile]:
    """Check the inputs that need no API call; return the files to deploy (empty for Git)."""
    params = module.params
    if params["state"] != "present":
        return []
    if params["path"] is not None:
        path = params["path"]
        if not path or not os.path.isdir(path):
            module.fail_json(msg=f"path {path!r} is not a directory.")
        files = scan_directory(path)
        if not files:
            module.fail_json(msg=f"path {path!r} holds no files to deploy.")
        return files
    errors = git_source_errors(params["git_source"])
    if errors:
        module.fail_json(msg="Invalid git_source, nothing was sent to Vercel: " + " ".join(errors))
    return []


class Deployer:
    def __init__(self, module: AnsibleModule, client: VercelClient) -> None:
        self.module = module
        self.params = module.params
        self.client = client

    # -- helpers

    def wait_for(self, deployment: dict[str, Any], require_alias: bool) -> dict[str, Any]:
        deadline = time.monotonic() + self.params["wait_timeout"]
        current = deployment
        while True:
            status = deployment_status(current, require_alias)
            if status == "ready":
                return current
            if status == "failed":
                raise VercelError(f"{deployment_failure(current)}; polled GET /v13/deployments/{current.get('id')}")
            if time.monotonic() >= deadline:
                raise VercelError(
                    f"Timed out after {self.params['wait_timeout']}s polling GET /v13/deployments/{current.get('id')}: "
                    f"readyState {current.get('readyState')}, aliasAssigned {current.get('aliasAssigned')} "
                    f"(inspect: {current.get('inspectorUrl')})"
                )
            time.sleep(self.params["poll_interval"])
            current = self.client.get_deployment(current["id"])

    def find_ready(self, project_id: str, target: str | None, meta: dict[str, str]) -> dict[str, Any] | None:
        found = self.client.list_deployments(project_id, target=target, state="READY", meta=meta, limit=1)
        return found[0] if found else None

    def production_id(self, project: dict[str, Any]) -> str | None:
        production = (project.get("targets") or {}).get("production") or {}
        return production.get("id")

    # -- state=present

    def present(self, project: dict[str, Any], files: list[LocalFile]) -> dict[str, Any]:
        params = self.params
        digest = source_digest(files) if files else None
        meta = build_meta(params, digest)
        target = params["target"]
        existing = self.find_ready(project["id"], target, identity_meta(meta))
        result: dict[str, Any] = dict(
            changed=False, deployed=False, uploaded=False, files_uploaded=0, bytes_uploaded=0, uploaded_files=[]
        )
        if files:
            result["files_total"] = len(files)
            result["bytes_total"] = sum(f.size for f in files)
        before = {"project": project.get("name"), "target": target, "deployment": None}
        if existing:
            deployment = self.client.get_deployment(existing.get("uid") or existing["id"])
            before["deployment"] = deployment.get("id")
            result.update(deployment=summarize(deployment), diff=dict(before=before, after=before))
            return result

        after = dict(
            before, deployment="(new deployment)", commitSha=meta.get("commitSha"), files=[f.path for f in files]
        )
        result.update(changed=True, deployed=True, diff=dict(before=before, after=after))
        if self.module.check_mode:
            result.update(
                deployment={},
                uploaded=bool(files),
                files_uploaded=len(files),
                bytes_uploaded=sum(f.size for f in files),
                uploaded_files=[f.path for f in files],
            )
            return result

        body: dict[str, Any] = {
            "name": project.get("name") or params["project"],
            "project": project["id"],
            "meta": meta,
        }
        if target != "preview":
            body["target"] = target
        if files:
            body["files"] = files_payload(files)
        else:
            body["gitSource"] = git_source_body(params["git_source"])
        deployment, uploaded = self.create_with_upload(body, files)
        result.update(
            uploaded=bool(uploaded),
            files_uploaded=len(uploaded),
            bytes_uploaded=sum(f.size for f in uploaded),
            uploaded_files=[f.path for f in uploaded],
        )
        if params["wait"]:
            deployment = self.wait_for(deployment, require_alias=target == "production")
        result["deployment"] = summarize(deployment)
        result["diff"]["after"]["deployment"] = deployment.get("id")
        return result

    def find_created(self, project_id: str, target: str | None, meta: dict[str, str]) -> dict[str, Any] | None:
        """The newest deployment of this build that is not failed, in any other state."""
        found = self.client.list_deployments(project_id, target=target, meta=meta, limit=20)
        alive = [d for d in found if deployment_state(d) not in FAILED_STATES]
        alive.sort(key=lambda d: d.get("created") or d.get("createdAt") or 0, reverse=True)
        return alive[0] if alive else None

    def create_once(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v13/deployments so that one build gives one deployment, whatever answers come back.

        A 5xx or a timeout does not say whether Vercel created the deployment. Before trying
        again, the deployment is looked up by its meta (commitSha, sourceDigest); a found one is
        taken, and a new create is only sent when there is none.
        """
        meta = identity_meta(body["meta"])
        attempt = 0
        while True:
            try:
                return self.client.create_deployment(body)
            except VercelAPIError as exc:
                if exc.status is not None and exc.status < 500:
                    raise
                failure = exc
            policy = self.client.policy
            found = self.find_created(body["project"], self.params["target"], meta)
            if found is not None:
                found_id = found.get("uid") or found["id"]
                self.module.warn(
                    f"POST /v13/deployments failed ({failure.describe()}), but deployment {found_id} of this "
                    f"build exists (found by meta {sorted(meta)}): using it instead of creating another."
                )
                return self.client.get_deployment(found_id)
            if attempt >= policy.retries:
                raise VercelError(
                    f"{failure.describe()}. No deployment of this build exists (GET /v6/deployments by meta "
                    f"{sorted(meta)}) after {attempt + 1} create attempts (retry bound: {policy.retries} retries)."
                )
            time.sleep(backoff_delay(attempt, policy, random.random()))  # noqa: S311 - jitter, not a secret
            attempt += 1

    def create_with_upload(
        self, body: dict[str, Any], files: list[LocalFile]
    ) -> tuple[dict[str, Any], list[LocalFile]]:
        """POST the deployment; on ``missing_files`` upload exactly those blobs and POST again."""
        try:
            return self.create_once(body), []
        except VercelAPIError as exc:
            if exc.code != "missing_files" or not files:
                raise
            missing = set(exc.error.get("missing") or [])
        by_sha: dict[str, LocalFile] = {}
        for item in files:
            by_sha.setdefault(item.sha, item)
        unknown = missing - set(by_sha)
        if unknown:
            raise VercelError(
                f"POST /v13/deployments reported missing_files for digests not in path: {sorted(unknown)}"
            )
        to_upload = [by_sha[sha] for sha in sorted(missing)]
        self.client.upload_files(to_upload, self.params["upload_concurrency"])
        return self.create_once(body), to_upload

    # -- state=promoted / rolled_back

    def select_for_promote(self, project: dict[str, Any]) -> dict[str, Any]:
        params = self.params
        if params["deployment"]:
            return self.client.get_deployment(params["deployment"])
        sha = params["git_source"]["sha"] if params["git_source"] else params["commit_sha"]
        found = self.find_ready(project["id"], None, {"commitSha": sha})
        if not found:
            raise VercelError(
                f"No READY deployment of project {params['project']} for commit {sha} "
                f"(GET /v6/deployments with meta-commitSha)"
            )
        return self.client.get_deployment(found.get("uid") or found["id"])

    def select_for_rollback(self, project: dict[str, Any]) -> dict[str, Any]:
        if self.params["deployment"]:
            return self.client.get_deployment(self.params["deployment"])
        production = self.client.list_deployments(project["id"], target="production", state="READY", limit=20)
        production.sort(key=lambda d: d.get("created") or d.get("createdAt") or 0, reverse=True)
        if len(production) < 2:
            raise VercelError(
                f"Project {self.params['project']} has no production deployment before the latest one "
                f"to roll back to (GET /v6/deployments found {len(production)})."
            )
        previous = production[1]
        return self.client.get_deployment(previous.get("uid") or previous["id"])

    def switch_production(self, project: dict[str, Any], state: str) -> dict[str, Any]:
        select = self.select_for_promote if state == "promoted" else self.select_for_rollback
        deployment = select(project)
        if deployment.get("readyState") != "READY":
            raise VercelError(
                f"Deployment {deployment.get('id')} is {deployment.get('readyState')}, not READY: "
                f"it cannot serve production traffic."
            )
        current = self.production_id(project)
        result: dict[str, Any] = dict(
            changed=current != deployment["id"],
            production_before=current,
            diff=dict(before={"production": current}, after={"production": deployment["id"]}),
        )
        if result["changed"] and not self.module.check_mode:
            if state == "promoted":
                self.client.promote(project["id"], deployment["id"])
            else:
                self.client.rollback(project["id"], deployment["id"], description="rolled back by Ansible")
            if self.params["wait"]:
                kind = "promote" if state == "promoted" else "rollback"
                self.wait_for_alias_job(project["id"], deployment["id"], kind)
            deployment = self.client.get_deployment(deployment["id"])
        result["deployment"] = summarize(deployment)
        return result

    def wait_for_alias_job(self, project_id: str, deployment_id: str, kind: str) -> None:
        """Poll the project until Vercel's alias job for ``deployment_id`` succeeds; fail when it fails."""
        deadline = time.monotonic() + self.params["wait_timeout"]
        while True:
            project = self.client.get_project(project_id)
            status, job = alias_job_status(project, deployment_id, kind)
            if status == "succeeded":
                return
            if status == "failed":
                try:
                    aliases = self.client.failed_aliases(project_id, kind)
                except VercelAPIError:
                    aliases = []
                raise VercelError(
                    f"{alias_job_failure(job, kind, aliases)}; polled GET /v9/projects/{project_id} (lastAliasRequest)."
                )
            if time.monotonic() >= deadline:
                raise VercelError(
                    f"Timed out after {self.params['wait_timeout']}s waiting for the {kind} of {deployment_id}: "
                    f"lastAliasRequest.jobStatus {job.get('jobStatus')!r} (GET /v9/projects/{project_id})."
                )
            time.sleep(self.params["poll_interval"])

    def run(self, files: list[LocalFile]) -> dict[str, Any]:
        project = self.client.get_project(self.params["project"])
        if self.params["state"] == "present":
            return self.present(project, files)
        return self.switch_production(project, self.params["state"])


def argument_spec() -> dict[str, Any]:
    spec = vercel_argument_spec()
    spec.update(
        project=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "promoted", "rolled_back"]),
        path=dict(type="path"),
        git_source=dict(
            type="dict",
            options=dict(
                type=dict(type="str", default="github", choices=["github", "gitlab", "bitbucket"]),
                org=dict(type="str"),
                repo=dict(type="str"),
                repo_id=dict(type="str"),
                project_id=dict(type="str"),
                owner=dict(type="str"),
                slug=dict(type="str"),
                repo_uuid=dict(type="str"),
                workspace_uuid=dict(type="str"),
                ref=dict(type="str", required=True),
                sha=dict(type="str", required=True),
            ),
        ),
        commit_sha=dict(type="str"),
        target=dict(type="str", default="preview"),
        meta=dict(type="dict", default={}),
        deployment=dict(type="str"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=600),
        poll_interval=dict(type="float", default=3.0),
        upload_concurrency=dict(type="int", default=8),
    )
    return spec


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(
        argument_spec=argument_spec(),
        mutually_exclusive=[("path", "git_source")],
        required_by={"path": "commit_sha"},
        required_if=[("state", "present", ("path", "git_source"), True)],
        supports_check_mode=True,
    )


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    if module.params["state"] == "promoted" and not (
        module.params["deployment"] or module.params["commit_sha"] or module.params["git_source"]
    ):
        module.fail_json(msg="state=promoted needs deployment, commit_sha or git_source.sha.")
    files = validate(module)
    client = client_from_module(module)
    try:
        result = Deployer(module, client).run(files)
    except VercelAPIError as exc:
        module.fail_json(msg=str(exc), **exc.to_result())
    except VercelError as exc:
        module.fail_json(msg=str(exc))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
