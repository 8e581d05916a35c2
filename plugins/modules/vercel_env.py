#!/usr/bin/python
# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vercel_env
short_description: Manage the environment variables of a Vercel project
version_added: 0.1.0
description:
  - Makes the environment variables of a Vercel project match a list of C(key), C(value),
    C(targets) and C(type) entries.
  - Reads the project's variables and creates, updates or deletes only what differs.
  - Plain values are compared as the variable list returns them. Encrypted values are read one
    by one through Vercel's decrypting endpoint (C(GET /v1/projects/{idOrName}/env/{id})); the
    list itself only returns ciphertext.
  - Vercel never returns a C(sensitive) value. With O(fingerprint_key), the module keeps a keyed
    fingerprint (HMAC-SHA256 of the key name and value) of every C(encrypted) and C(sensitive)
    value it writes in the variable's C(comment), and compares that instead. The comment is
    owned by the module on those variables.
  - Values, fingerprints and the key are never logged, returned or shown in a diff; a changed
    value shows as changed.
  - Variables scoped to a Git branch or to a custom environment are left alone.
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
      - Makes read requests only and returns the changes a real run would make.
  diff_mode:
    support: full
    details:
      - The diff lists keys, targets and types. Values are shown as C(<hidden>), or
        C(<hidden, changed>) when they would change.
  idempotent:
    support: partial
    details:
      - C(sensitive) values (and C(encrypted) ones Vercel does not decrypt) are compared through the
        fingerprint in their comment, which needs O(fingerprint_key).
      - A C(sensitive) or undecryptable variable without a fingerprint (created outside the module,
        or before fingerprints) is written once to record one, and reported as changed.
      - Changing O(fingerprint_key) makes every fingerprint differ, so the next run writes each such
        value once.
      - With O(overwrite_unreadable=true) such values are written on every run instead, which then
        always reports a change.
      - A C(sensitive) value changed outside Ansible without touching its comment still matches its
        fingerprint, so the module does not see that change.
options:
  project:
    description:
      - Name or id of the Vercel project.
    type: str
    required: true
  variables:
    description:
      - The variables to manage.
      - The same key may appear more than once with different values for disjoint targets.
      - The module fails before any request on an invalid key, an unknown target, a key listed twice
        for the same target, or a C(sensitive) variable for the C(development) target.
    type: list
    elements: dict
    required: true
    suboptions:
      key:
        description:
          - Name of the variable. Letters, digits and underscores, not starting with a digit.
        type: str
        required: true
      value:
        description:
          - Value of the variable. Required with O(state=present). Never logged.
        type: str
      targets:
        description:
          - Targets the value applies to, among V(production), V(preview) and V(development).
        type: list
        elements: str
        default: [production, preview, development]
      type:
        description:
          - How Vercel stores the value. V(sensitive) values can never be read back.
        type: str
        choices: [encrypted, sensitive, plain]
        default: encrypted
  state:
    description:
      - V(present) creates or updates the listed variables.
      - V(absent) removes the listed keys from the listed targets (values are not needed).
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=present), also remove every variable the list does not name, for the targets
        the list manages (the union of its C(targets)). Other targets are left alone.
    type: bool
    default: false
  overwrite_unreadable:
    description:
      - Write the values Vercel does not return (C(sensitive) variables) on every run instead of
        comparing fingerprints. Then O(fingerprint_key) is not needed.
    type: bool
    default: false
  fingerprint_key:
    description:
      - Secret key of the value fingerprints kept in the C(comment) of C(encrypted) and
        C(sensitive) variables. At least 32 characters, for example C(openssl rand -hex 32),
        kept in Ansible Vault.
      - Use a key of its own, not the Vercel token, so that rotating the token does not rewrite
        every secret. Rotating this key rewrites each fingerprinted value once.
      - If not set, the value of the E(THINKUS_VERCEL_FINGERPRINT_KEY) environment variable is used.
      - Required with O(state=present) when a variable has O(variables[].type=sensitive), unless
        O(overwrite_unreadable=true); the module then fails before any request, naming this option.
      - Never logged or returned.
    type: str
seealso:
  - module: thinkus.ops.vercel_deploy
  - name: Vercel environment variables
    description: How Vercel scopes variables to production, preview and development.
    link: https://vercel.com/docs/environment-variables
"""

EXAMPLES = r"""
- name: Set the frontend's variables from the vault, removing any others
  thinkus.ops.vercel_env:
    project: thinkus-web
    purge: true
    variables:
      - key: NEXTAUTH_URL
        value: https://app.thinkus.ai
        targets: [production]
        type: plain
      - key: NEXTAUTH_URL
        value: https://preview.thinkus.ai
        targets: [preview]
        type: plain
      - key: NEXTAUTH_SECRET
        value: "{{ vault_nextauth_secret }}"
        targets: [production, preview]
        type: sensitive
      - key: STRIPE_SECRET_KEY
        value: "{{ vault_stripe_secret_key }}"
        targets: [production]
    # compares the sensitive NEXTAUTH_SECRET through a keyed fingerprint in its comment
    fingerprint_key: "{{ vault_vercel_env_fingerprint_key }}"

- name: Remove a variable from preview deployments
  thinkus.ops.vercel_env:
    project: thinkus-web
    state: absent
    variables:
      - key: LEGACY_API_URL
        targets: [preview]
"""

RETURN = r"""
changes:
  description: What was (or in check mode would be) created, updated or deleted. Never values.
  returned: always
  type: list
  elements: dict
  contains:
    action:
      description: V(create), V(update) or V(delete).
      type: str
    key:
      description: Name of the variable.
      type: str
    id:
      description: Vercel id of the variable (absent for a creation).
      type: str
    targets:
      description: Targets of the variable after the change (before it for a deletion).
      type: list
      elements: str
    fields:
      description:
        - Fields sent in an update (C(value) and C(comment), which holds the fingerprint, are named,
          never shown).
      type: list
      elements: str
  sample:
    - action: update
      key: STRIPE_SECRET_KEY
      id: env_8fQm2kP1
      targets: [production]
      fields: [value]
variables:
  description: The project's managed variables after the run, without values.
  returned: success
  type: list
  elements: dict
  sample:
    - key: NEXTAUTH_URL
      targets: [production]
      type: plain
"""

from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.thinkus.ops.plugins.module_utils._vercel import (
    ENV_KEY_RE,
    ENV_TARGETS,
    ENV_TYPES,
    FINGERPRINT_KEY_MIN_LENGTH,
    VercelAPIError,
    VercelError,
    client_from_module,
    comment_fingerprint,
    fingerprint_comment,
    value_fingerprint,
    vercel_argument_spec,
)

FINGERPRINT_ENV = "THINKUS_VERCEL_FINGERPRINT_KEY"
# Types whose values the module fingerprints (plain values are compared as they are).
FINGERPRINTED_TYPES = ("encrypted", "sensitive")

HIDDEN = "<hidden>"
HIDDEN_CHANGED = "<hidden, changed>"


# --------------------------------------------------------------------------- validation (pure)


def validate_variables(variables: list[dict[str, Any]], state: str) -> list[str]:
    """Every problem with the input, each naming the key; empty when the input is usable."""
    errors = []
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(variables):
        key = item.get("key") or ""
        label = f"variables[{index}] (key {key!r})"
        if not ENV_KEY_RE.match(key):
            errors.append(
                f"{label}: {key!r} is not a valid environment variable name "
                "(letters, digits and underscores, not starting with a digit)."
            )
        targets = item.get("targets") or []
        if not targets:
            errors.append(f"{label}: targets is empty.")
        unknown = [t for t in targets if t not in ENV_TARGETS]
        if unknown:
            errors.append(f"{label}: unknown target(s) {', '.join(unknown)}; use {', '.join(ENV_TARGETS)}.")
        if item.get("type", "encrypted") not in ENV_TYPES:
            errors.append(f"{label}: unknown type {item.get('type')!r}.")
        if state == "present" and item.get("value") is None:
            errors.append(f"{label}: value is required with state=present.")
        if state == "present" and item.get("type") == "sensitive" and "development" in targets:
            errors.append(f"{label}: Vercel does not allow sensitive variables for the development target.")
        for target in targets:
            first = seen.setdefault((key, target), index)
            if first != index:
                errors.append(f"{label}: key {key!r} is listed twice for target {target} (also variables[{first}]).")
    return errors


def validate_fingerprint_key(
    variables: list[dict[str, Any]], state: str, key: str | None, overwrite_unreadable: bool
) -> str | None:
    """The problem with ``fingerprint_key`` for this input, None when there is none."""
    if key is not None and key != "" and len(key) < FINGERPRINT_KEY_MIN_LENGTH:
        return (
            f"fingerprint_key is shorter than {FINGERPRINT_KEY_MIN_LENGTH} characters; "
            "use a random key such as the output of `openssl rand -hex 32`."
        )
    if state != "present" or key or overwrite_unreadable:
        return None
    sensitive = sorted({item["key"] for item in variables if item.get("type") == "sensitive"})
    if not sensitive:
        return None
    return (
        f"Vercel never returns sensitive values, so comparing {', '.join(sensitive)} needs fingerprint_key "
        f"(or the {FINGERPRINT_ENV} environment variable): a secret of at least {FINGERPRINT_KEY_MIN_LENGTH} "
        "characters from the vault. Or set overwrite_unreadable=true to write them on every run."
    )


# --------------------------------------------------------------------------- planning (pure)


@dataclass
class Record:
    """A variable as Vercel holds it, reduced to what the module manages."""

    id: str
    key: str
    targets: set[str]
    type: str
    value: str | None  # None when Vercel did not return it decrypted
    fingerprint: str | None = None  # from the comment, for values Vercel does not return

    @classmethod
    def from_api(cls, env: dict[str, Any]) -> Record:
        targets = env.get("target") or []
        if isinstance(targets, str):
            targets = [targets]
        readable = env.get("type") == "plain" or env.get("decrypted") is True
        value = env.get("value")
        return cls(
            id=env["id"],
            key=env["key"],
            targets=set(targets),
            type=env.get("type", "encrypted"),
            value=value if readable and isinstance(value, str) else None,
            fingerprint=comment_fingerprint(env.get("comment")),
        )


@dataclass
class Change:
    action: str  # create | update | delete
    key: str
    targets: list[str]
    id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # the API body; may hold a value: never returned

    def public(self) -> dict[str, Any]:
        result: dict[str, Any] = {"action": self.action, "key": self.key, "targets": self.targets}
        if self.id:
            result["id"] = self.id
        if self.action == "update":
            result["fields"] = sorted(self.fields)
        return result


def managed_records(envs: list[dict[str, Any]]) -> list[Record]:
    """The project's plain target-scoped variables; branch-scoped and custom-environment ones are left alone."""
    return [
        Record.from_api(e)
        for e in envs
        if not e.get("gitBranch")
        and not e.get("customEnvironmentIds")
        and e.get("type") != "system"
        and e.get("target")
    ]


def _ordered(targets: set[str]) -> list[str]:
    return [t for t in ENV_TARGETS if t in targets] + sorted(t for t in targets if t not in ENV_TARGETS)


def plan_absent(variables: list[dict[str, Any]], records: list[Record]) -> list[Change]:
    changes = []
    for record in records:
        drop = set()
        for item in variables:
            if item["key"] == record.key:
                drop |= record.targets & set(item["targets"])
        if not drop:
            continue
        remaining = record.targets - drop
        if remaining:
            targets = _ordered(remaining)
            changes.append(Change("update", record.key, targets, record.id, {"target": targets}))
        else:
            changes.append(Change("delete", record.key, _ordered(record.targets), record.id))
    return changes


def value_fields(item: dict[str, Any], fingerprint_key: str | None) -> dict[str, Any]:
    """The body that writes ``item``'s value, with its fingerprint comment where one is kept."""
    fields: dict[str, Any] = {"value": item["value"]}
    if fingerprint_key and item["type"] in FINGERPRINTED_TYPES:
        fields["comment"] = fingerprint_comment(value_fingerprint(fingerprint_key, item["key"], item["value"]))
    return fields


def value_differs(record: Record, item: dict[str, Any], fingerprint_key: str | None) -> bool | None:
    """Whether the value Vercel holds differs from ``item``'s; None when it cannot be told."""
    if record.value is not None:
        return record.value != item["value"]
    if fingerprint_key and record.fingerprint:
        return record.fingerprint != value_fingerprint(fingerprint_key, item["key"], item["value"])
    return None


def plan_present(
    variables: list[dict[str, Any]],
    records: list[Record],
    purge: bool,
    overwrite_unreadable: bool,
    fingerprint_key: str | None = None,
) -> list[Change]:
    """The changes that make ``records`` hold ``variables``: shrinks and deletes first, then updates, then creates.

    A value Vercel returns is compared as it is; one it does not return is compared through
    the fingerprint in its comment (with ``fingerprint_key``), or written when that cannot be
    told: always with ``overwrite_unreadable``, once to record a fingerprint with a key.
    """
    wanted = {(item["key"], t) for item in variables for t in item["targets"]}
    managed_targets = {t for item in variables for t in item["targets"]}

    def preserved(record: Record, item_targets: set[str]) -> set[str]:
        """Targets of ``record`` outside ``item_targets`` that must keep their current value."""
        return {
            t
            for t in record.targets - item_targets
            if (record.key, t) not in wanted and not (purge and t in managed_targets)
        }

    claimed: dict[int, Record] = {}
    used: set[str] = set()
    for index, item in enumerate(variables):
        item_targets = set(item["targets"])
        candidates = [
            r
            for r in records
            if r.key == item["key"] and r.id not in used and r.targets & item_targets and not preserved(r, item_targets)
        ]
        if candidates:
            best = max(candidates, key=lambda r: (r.targets == item_targets, len(r.targets & item_targets)))
            claimed[index] = best
            used.add(best.id)

    shrinks, updates, creates = [], [], []
    for record in records:
        if record.id in used:
            continue
        remove = {t for t in record.targets if (record.key, t) in wanted or (purge and t in managed_targets)}
        if not remove:
            continue
        remaining = record.targets - remove
        if remaining:
            shrinks.append(
                Change("update", record.key, _ordered(remaining), record.id, {"target": _ordered(remaining)})
            )
        else:
            shrinks.append(Change("delete", record.key, _ordered(record.targets), record.id))

    for index, item in enumerate(variables):
        item_targets = set(item["targets"])
        record = claimed.get(index)
        if record is None:
            creates.append(
                Change(
                    "create",
                    item["key"],
                    _ordered(item_targets),
                    None,
                    {
                        "key": item["key"],
                        "type": item["type"],
                        "target": _ordered(item_targets),
                        **value_fields(item, fingerprint_key),
                    },
                )
            )
            continue
        fields: dict[str, Any] = {}
        if record.targets != item_targets:
            fields["target"] = _ordered(item_targets)
        if record.type != item["type"]:
            fields["type"] = item["type"]
            fields.update(value_fields(item, fingerprint_key))
        differs = value_differs(record, item, fingerprint_key)
        if differs is None:
            # Unknown value: written with any other change, or when asked to, or to record a fingerprint.
            if overwrite_unreadable or fields or fingerprint_key:
                fields.update(value_fields(item, fingerprint_key))
                fields["type"] = item["type"]
        elif differs:
            fields.update(value_fields(item, fingerprint_key))
        if fields:
            updates.append(Change("update", item["key"], _ordered(item_targets), record.id, fields))
    # Updates that only narrow targets go first so that widening ones never overlap them.
    updates.sort(key=lambda c: 0 if set(c.targets) <= _targets_of(records, c.id) else 1)
    return shrinks + updates + creates


def _targets_of(records: list[Record], record_id: str | None) -> set[str]:
    for record in records:
        if record.id == record_id:
            return record.targets
    return set()


def apply_plan(records: list[Record], changes: list[Change]) -> list[dict[str, Any]]:
    """The records as they will be after ``changes``: key, targets, type and a value marker."""
    after: dict[str, dict[str, Any]] = {
        r.id: {"key": r.key, "targets": _ordered(r.targets), "type": r.type, "value": HIDDEN} for r in records
    }
    for number, change in enumerate(changes):
        if change.action == "delete":
            after.pop(change.id or "", None)
        elif change.action == "create":
            after[f"new-{number}"] = {
                "key": change.key,
                "targets": change.targets,
                "type": change.fields["type"],
                "value": HIDDEN_CHANGED,
            }
        else:
            entry = after[change.id or ""]
            entry["targets"] = change.targets
            entry["type"] = change.fields.get("type", entry["type"])
            if "value" in change.fields:
                entry["value"] = HIDDEN_CHANGED
    return sorted(after.values(), key=lambda e: (e["key"], e["targets"]))


def describe(records: list[Record]) -> list[dict[str, Any]]:
    return sorted(
        ({"key": r.key, "targets": _ordered(r.targets), "type": r.type, "value": HIDDEN} for r in records),
        key=lambda e: (e["key"], e["targets"]),
    )


# --------------------------------------------------------------------------- module


def argument_spec() -> dict[str, Any]:
    spec = vercel_argument_spec()
    spec.update(
        project=dict(type="str", required=True),
        variables=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                key=dict(type="str", required=True, no_log=False),
                value=dict(type="str", no_log=True),
                targets=dict(type="list", elements="str", default=list(ENV_TARGETS)),
                type=dict(type="str", default="encrypted", choices=list(ENV_TYPES)),
            ),
        ),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        purge=dict(type="bool", default=False),
        overwrite_unreadable=dict(type="bool", default=False),
        fingerprint_key=dict(type="str", no_log=True, fallback=(env_fallback, [FINGERPRINT_ENV])),
    )
    return spec


def read_encrypted_values(client: Any, project_id: str, records: list[Record], variables: list[dict[str, Any]]) -> None:
    """Fill in the value of each listed encrypted variable through Vercel's decrypting read.

    The variable list returns ciphertext; ``GET /v1/projects/{p}/env/{id}`` returns the
    value with ``decrypted: true`` when Vercel can give it. Sensitive values are never read.
    """
    wanted = {item["key"] for item in variables}
    for record in records:
        if record.type != "encrypted" or record.value is not None or record.key not in wanted:
            continue
        env = client.get_env(project_id, record.id)
        if env.get("decrypted") is True and isinstance(env.get("value"), str):
            record.value = env["value"]


def run(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    client = client_from_module(module)
    project = client.get_project(params["project"])
    project_id = project["id"]
    records = managed_records(client.list_env(project_id))
    if params["state"] == "present":
        read_encrypted_values(client, project_id, records, params["variables"])
        changes = plan_present(
            params["variables"],
            records,
            params["purge"],
            params["overwrite_unreadable"],
            params["fingerprint_key"] or None,
        )
    else:
        changes = plan_absent(params["variables"], records)
    before = describe(records)
    after = apply_plan(records, changes)
    result: dict[str, Any] = dict(changed=bool(changes), changes=[c.public() for c in changes])
    if module._diff:
        result["diff"] = dict(before={"variables": before}, after={"variables": after})
    if changes and not module.check_mode:
        apply_changes(client, project_id, changes)
        after = describe(managed_records(client.list_env(project_id)))
    result["variables"] = [{k: v for k, v in e.items() if k != "value"} for e in after]
    return result


def apply_changes(client: Any, project_id: str, changes: list[Change]) -> None:
    for change in changes:
        if change.action == "delete":
            client.delete_env(project_id, change.id)
        elif change.action == "update":
            client.update_env(project_id, change.id, change.fields)
    creates = [c.fields for c in changes if c.action == "create"]
    if creates:
        answer = client.create_env(project_id, creates)
        failed = answer.get("failed") or []
        if failed:
            problems = "; ".join(
                f"{(f.get('error') or {}).get('key', '?')}: {(f.get('error') or {}).get('code')} "
                f"{(f.get('error') or {}).get('message', '')}".strip()
                for f in failed
            )
            raise VercelError(f"Vercel API POST /v10/projects/{project_id}/env refused some variables: {problems}")


def module_args() -> dict[str, Any]:
    """AnsibleModule's arguments; the action plugin validates the same in the controller."""
    return dict(argument_spec=argument_spec(), supports_check_mode=True)


def run_module(module: Any) -> None:
    """The module's work, on an AnsibleModule or the action plugin's stand-in for one."""
    params = module.params
    errors = validate_variables(params["variables"], params["state"])
    if errors:
        module.fail_json(msg="Invalid variables, nothing was sent to Vercel: " + " ".join(errors), errors=errors)
    key_error = validate_fingerprint_key(
        params["variables"], params["state"], params["fingerprint_key"], params["overwrite_unreadable"]
    )
    if key_error:
        module.fail_json(msg="Nothing was sent to Vercel: " + key_error)
    try:
        result = run(module)
    except VercelAPIError as exc:
        module.fail_json(msg=str(exc), **exc.to_result())
    except VercelError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


def main() -> None:
    run_module(AnsibleModule(**module_args()))


if __name__ == "__main__":
    main()
