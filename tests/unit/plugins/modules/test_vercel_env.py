# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests of thinkus.ops.vercel_env: validation and the change plan."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.thinkus.ops.plugins.module_utils._vercel import fingerprint_comment, value_fingerprint
from ansible_collections.thinkus.ops.plugins.modules import vercel_env as mod


def var(key: str, value: str | None = "v", targets: list[str] | None = None, type_: str = "encrypted") -> dict:
    return {"key": key, "value": value, "targets": targets or ["production"], "type": type_}


def env(id_: str, key: str, value: str, targets: list[str], type_: str = "encrypted", **extra: Any) -> dict:
    return {"id": id_, "key": key, "value": value, "target": targets, "type": type_, "decrypted": True, **extra}


def plan(variables: list[dict], envs: list[dict], purge: bool = False, overwrite: bool = False) -> list[mod.Change]:
    return mod.plan_present(variables, mod.managed_records(envs), purge, overwrite)


# ---------------------------------------------------------------- validation


def test_valid_input_has_no_errors() -> None:
    variables = [
        var("NEXTAUTH_URL", targets=["production"]),
        var("NEXTAUTH_URL", targets=["preview"]),
        var("_PRIVATE", targets=["development"]),
    ]
    assert mod.validate_variables(variables, "present") == []


@pytest.mark.parametrize("key", ["1ABC", "WITH-DASH", "has space", "", "ÄPFEL"])
def test_invalid_keys_are_named(key: str) -> None:
    errors = mod.validate_variables([var(key)], "present")
    assert len(errors) == 1
    assert repr(key) in errors[0]
    assert "not a valid environment variable name" in errors[0]


def test_unknown_target_is_named_with_the_key() -> None:
    [error] = mod.validate_variables([var("API_URL", targets=["production", "staging"])], "present")
    assert "API_URL" in error
    assert "staging" in error


def test_duplicate_key_for_a_target_is_named() -> None:
    errors = mod.validate_variables(
        [var("API_URL", targets=["production"]), var("API_URL", targets=["preview", "production"])], "present"
    )
    assert errors == [
        "variables[1] (key 'API_URL'): key 'API_URL' is listed twice for target production (also variables[0])."
    ]


def test_value_required_for_present_only() -> None:
    assert mod.validate_variables([var("A", value=None)], "present")
    assert mod.validate_variables([var("A", value=None)], "absent") == []


def test_sensitive_cannot_target_development() -> None:
    [error] = mod.validate_variables([var("S", targets=["development"], type_="sensitive")], "present")
    assert "sensitive" in error


def test_errors_never_contain_values() -> None:
    errors = mod.validate_variables([var("1BAD", value="hunter2-value", targets=["nope"])], "present")
    assert errors
    assert all("hunter2-value" not in e for e in errors)


# ---------------------------------------------------------------- plan: present


def test_everything_missing_is_created() -> None:
    changes = plan([var("A"), var("B", targets=["preview", "production"])], [])
    assert [(c.action, c.key, c.targets) for c in changes] == [
        ("create", "A", ["production"]),
        ("create", "B", ["production", "preview"]),
    ]


def test_nothing_differs_nothing_changes() -> None:
    assert plan([var("A", "x")], [env("e1", "A", "x", ["production"])]) == []


def test_one_value_changed_is_one_update_of_the_value_only() -> None:
    changes = plan(
        [var("A", "new"), var("B", "same")],
        [env("e1", "A", "old", ["production"]), env("e2", "B", "same", ["production"])],
    )
    assert len(changes) == 1
    change = changes[0]
    assert (change.action, change.id, sorted(change.fields)) == ("update", "e1", ["value"])
    assert change.public() == {
        "action": "update",
        "key": "A",
        "targets": ["production"],
        "id": "e1",
        "fields": ["value"],
    }


def test_targets_and_type_changes_are_updates() -> None:
    [change] = plan([var("A", "x", ["production", "preview"], "plain")], [env("e1", "A", "x", ["production"])])
    assert change.fields == {"target": ["production", "preview"], "type": "plain", "value": "x"}


def test_unreadable_values_are_left_alone_unless_asked() -> None:
    sensitive = {"id": "e1", "key": "S", "value": "", "target": ["production"], "type": "sensitive", "decrypted": False}
    assert plan([var("S", "x", type_="sensitive")], [sensitive]) == []
    [change] = plan([var("S", "x", type_="sensitive")], [sensitive], overwrite=True)
    assert change.fields == {"value": "x", "type": "sensitive"}


def test_same_key_split_per_target() -> None:
    changes = plan(
        [var("URL", "p", ["production"]), var("URL", "v", ["preview"])],
        [env("e1", "URL", "p", ["production", "preview"])],
    )
    # e1 keeps production (its value is right); preview gets its own variable.
    assert [(c.action, c.id, c.targets) for c in changes] == [
        (
            "update",
            "e1",
            ["production"],
        ),
        ("create", None, ["preview"]),
    ]


def test_a_record_holding_unmanaged_targets_is_not_taken_over_without_purge() -> None:
    changes = plan([var("A", "new", ["production"])], [env("e1", "A", "old", ["production", "development"])])
    # development keeps the old value: e1 shrinks to development, production gets a new variable.
    assert [(c.action, c.id, c.targets) for c in changes] == [
        ("update", "e1", ["development"]),
        ("create", None, ["production"]),
    ]


def test_purge_removes_only_managed_targets() -> None:
    envs = [
        env("e1", "A", "x", ["production"]),
        env("e2", "EXTRA", "y", ["production", "development"]),
        env("e3", "GONE", "z", ["production"]),
        env("e4", "DEV_ONLY", "d", ["development"]),
        env("e5", "BRANCH", "b", ["preview"], gitBranch="feature"),
    ]
    changes = plan([var("A", "x")], envs, purge=True)
    assert [(c.action, c.key, c.targets) for c in changes] == [
        ("update", "EXTRA", ["development"]),
        ("delete", "GONE", ["production"]),
    ]


def test_without_purge_extras_stay() -> None:
    assert plan([var("A", "x")], [env("e1", "A", "x", ["production"]), env("e2", "B", "y", ["production"])]) == []


def test_shrinks_come_before_widening_updates() -> None:
    changes = plan(
        [var("K", "a", ["production", "preview"]), var("K", "b", ["development"])],
        [env("e1", "K", "a", ["production"]), env("e2", "K", "b", ["preview", "development"])],
    )
    order = [(c.id, c.targets) for c in changes]
    assert order == [("e2", ["development"]), ("e1", ["production", "preview"])]


# ---------------------------------------------------------------- plan: absent and diff


def test_absent_removes_listed_targets_only() -> None:
    envs = [env("e1", "A", "x", ["production", "preview"]), env("e2", "B", "y", ["preview"])]
    changes = mod.plan_absent([var("A", None, ["preview"]), var("B", None, ["preview"])], mod.managed_records(envs))
    assert [(c.action, c.id, c.targets) for c in changes] == [
        ("update", "e1", ["production"]),
        ("delete", "e2", ["preview"]),
    ]
    assert mod.plan_absent([var("C", None)], mod.managed_records(envs)) == []


def test_diff_shows_keys_targets_and_markers_never_values() -> None:
    records = mod.managed_records([env("e1", "A", "old-secret", ["production"])])
    changes = mod.plan_present([var("A", "new-secret"), var("B", "b-secret")], records, False, False)
    before = mod.describe(records)
    after = mod.apply_plan(records, changes)
    assert before == [{"key": "A", "targets": ["production"], "type": "encrypted", "value": "<hidden>"}]
    assert after == [
        {"key": "A", "targets": ["production"], "type": "encrypted", "value": "<hidden, changed>"},
        {"key": "B", "targets": ["production"], "type": "encrypted", "value": "<hidden, changed>"},
    ]
    text = repr((before, after, [c.public() for c in changes]))
    assert "secret" not in text


def test_value_option_is_no_log() -> None:
    options = mod.argument_spec()["variables"]["options"]
    assert options["value"]["no_log"] is True
    assert mod.argument_spec()["token"]["no_log"] is True


# ---------------------------------------------------------------- fingerprints

KEY = "f" * 64


def sensitive_env(id_: str, key: str, comment: str | None, targets: list[str] | None = None) -> dict:
    record = {"id": id_, "key": key, "target": targets or ["production"], "type": "sensitive", "decrypted": False}
    if comment is not None:
        record["comment"] = comment
    return record


def fingerprinted(key: str, value: str) -> str:
    return fingerprint_comment(value_fingerprint(KEY, key, value))


def test_sensitive_value_unchanged_by_fingerprint_is_left_alone() -> None:
    envs = [sensitive_env("e1", "S", fingerprinted("S", "old"))]
    assert mod.plan_present([var("S", "old", type_="sensitive")], mod.managed_records(envs), False, False, KEY) == []


def test_sensitive_value_changed_is_written_with_its_new_fingerprint() -> None:
    envs = [sensitive_env("e1", "S", fingerprinted("S", "old"))]
    [change] = mod.plan_present([var("S", "new", type_="sensitive")], mod.managed_records(envs), False, False, KEY)
    assert change.fields == {"value": "new", "comment": fingerprinted("S", "new")}
    assert change.public()["fields"] == ["comment", "value"]
    assert "new" not in repr(change.public())


def test_sensitive_value_without_fingerprint_is_written_once_to_record_one() -> None:
    envs = [sensitive_env("e1", "S", "set by hand")]
    [change] = mod.plan_present([var("S", "v", type_="sensitive")], mod.managed_records(envs), False, False, KEY)
    assert change.fields == {"value": "v", "comment": fingerprinted("S", "v"), "type": "sensitive"}


def test_a_new_fingerprint_key_rewrites_once() -> None:
    envs = [sensitive_env("e1", "S", fingerprinted("S", "v"))]
    other_key = "e" * 64
    [change] = mod.plan_present([var("S", "v", type_="sensitive")], mod.managed_records(envs), False, False, other_key)
    assert change.fields["comment"] == fingerprint_comment(value_fingerprint(other_key, "S", "v"))


def test_encrypted_values_compare_the_decrypted_read_first() -> None:
    # Decrypted value equal: no write, even without a fingerprint in the comment.
    envs = [env("e1", "A", "same", ["production"])]
    assert mod.plan_present([var("A", "same")], mod.managed_records(envs), False, False, KEY) == []
    # Decrypted value differs: written with its fingerprint.
    [change] = mod.plan_present([var("A", "new")], mod.managed_records(envs), False, False, KEY)
    assert change.fields == {"value": "new", "comment": fingerprinted("A", "new")}


def test_creates_carry_a_fingerprint_for_secrets_only() -> None:
    changes = mod.plan_present(
        [var("P", "p", type_="plain"), var("E", "e"), var("S", "s", type_="sensitive")], [], False, False, KEY
    )
    comments = {c.key: c.fields.get("comment") for c in changes}
    assert comments == {"P": None, "E": fingerprinted("E", "e"), "S": fingerprinted("S", "s")}


def test_list_ciphertext_is_never_taken_for_a_value() -> None:
    listed = {"id": "e1", "key": "A", "value": "eyJ2IjoxfQ.abc", "target": ["production"], "type": "encrypted"}
    [record] = mod.managed_records([dict(listed, decrypted=False)])
    assert record.value is None


class EnvClient:
    def __init__(self, answers: dict[str, dict]) -> None:
        self.answers = answers
        self.reads: list[str] = []

    def get_env(self, project_id: str, env_id: str) -> dict:
        self.reads.append(env_id)
        return self.answers[env_id]


def test_encrypted_values_are_read_one_by_one_and_sensitive_never() -> None:
    records = mod.managed_records(
        [
            {"id": "e1", "key": "A", "value": "cipher", "target": ["production"], "type": "encrypted"},
            {"id": "e2", "key": "B", "value": "cipher", "target": ["production"], "type": "encrypted"},
            sensitive_env("e3", "S", None),
            {"id": "e4", "key": "UNLISTED", "value": "cipher", "target": ["production"], "type": "encrypted"},
        ]
    )
    client = EnvClient({"e1": {"decrypted": True, "value": "plain-a"}, "e2": {"decrypted": False, "value": "c"}})
    mod.read_encrypted_values(client, "prj", records, [var("A"), var("B"), var("S", type_="sensitive")])
    assert client.reads == ["e1", "e2"]
    assert [r.value for r in records] == ["plain-a", None, None, None]


def test_sensitive_variables_need_the_key_unless_overwritten() -> None:
    variables = [var("S", type_="sensitive"), var("T", type_="sensitive"), var("E")]
    error = mod.validate_fingerprint_key(variables, "present", None, False)
    assert error is not None
    assert "fingerprint_key" in error and "THINKUS_VERCEL_FINGERPRINT_KEY" in error and "S, T" in error
    assert mod.validate_fingerprint_key(variables, "present", None, True) is None
    assert mod.validate_fingerprint_key(variables, "absent", None, False) is None
    assert mod.validate_fingerprint_key([var("E")], "present", None, False) is None
    assert mod.validate_fingerprint_key(variables, "present", KEY, False) is None


def test_a_short_fingerprint_key_is_refused_without_echoing_it() -> None:
    error = mod.validate_fingerprint_key([var("E")], "present", "short-key-123", False)
    assert error is not None and "32 characters" in error
    assert "short-key-123" not in error


def test_fingerprint_key_option_is_no_log_with_env_fallback() -> None:
    option = mod.argument_spec()["fingerprint_key"]
    assert option["no_log"] is True
    assert option["fallback"][1] == ["THINKUS_VERCEL_FINGERPRINT_KEY"]
