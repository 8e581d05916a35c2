"""playbooks/vars/awx.yml against the awx.awx modules' own argument specs, without a controller.

Each awx.awx module builds its argument spec in main() and hands it to ControllerAPIModule.
The test swaps that class for one that records the spec and stops, then validates every
entry of our configuration with Ansible's own ArgumentSpecValidator, exactly as the module
would before it talks to a controller.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "playbooks" / "vars" / "awx.yml").read_text())
PLAYBOOK = yaml.safe_load((ROOT / "playbooks" / "awx_configure.yml").read_text())

LISTS = {
    "awx_organizations": "organization",
    "awx_execution_environments": "execution_environment",
    "awx_projects": "project",
    "awx_credential_types": "credential_type",
    "awx_credentials": "credential",
    "awx_inventories": "inventory",
    "awx_inventory_sources": "inventory_source",
    "awx_job_templates": "job_template",
    "awx_schedules": "schedule",
    "awx_workflow_job_templates": "workflow_job_template",
}


class _Captured(Exception):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__("captured")
        self.spec = spec


def _argument_spec(module_name: str) -> dict[str, Any]:
    mod = importlib.import_module(f"ansible_collections.awx.awx.plugins.modules.{module_name}")

    class _Recorder:
        def __init__(self, argument_spec: dict[str, Any], **_: Any) -> None:
            raise _Captured(argument_spec)

    original = mod.ControllerAPIModule
    mod.ControllerAPIModule = _Recorder
    try:
        mod.main()
    except _Captured as cap:
        return cap.spec
    finally:
        mod.ControllerAPIModule = original
    raise AssertionError(f"awx.awx.{module_name} did not build an argument spec")


def _entries() -> list[tuple[str, str, dict[str, Any]]]:
    return [(key, module, item) for key, module in LISTS.items() for item in CONFIG[key]]


@pytest.mark.parametrize(
    ("key", "module", "item"), _entries(), ids=lambda v: v if isinstance(v, str) else v.get("name")
)
def test_entry_is_valid_for_its_awx_module(key: str, module: str, item: dict[str, Any]) -> None:
    spec = _argument_spec(module)
    # the controller connection comes from the environment at run time, as for any user
    result = ArgumentSpecValidator(spec).validate(dict(item))
    assert not result.error_messages, f"{key} entry {item.get('name')!r}: {result.error_messages}"


def test_every_job_template_runs_a_playbook_of_this_collection() -> None:
    for jt in CONFIG["awx_job_templates"]:
        playbook = jt["playbook"]
        assert playbook.startswith("playbooks/") and playbook.endswith(".yml"), playbook


def test_references_between_objects_resolve() -> None:
    credentials = {c["name"] for c in CONFIG["awx_credentials"]}
    cred_types = {c["name"] for c in CONFIG["awx_credential_types"]} | {"Vault"}
    inventories = {i["name"] for i in CONFIG["awx_inventories"]}
    templates = {j["name"] for j in CONFIG["awx_job_templates"]}
    assert {c["credential_type"] for c in CONFIG["awx_credentials"]} <= cred_types
    for jt in CONFIG["awx_job_templates"]:
        assert set(jt["credentials"]) <= credentials, jt["name"]
        assert jt["inventory"] in inventories, jt["name"]
    for sched in CONFIG["awx_schedules"]:
        assert sched["unified_job_template"] in templates, sched["name"]
    nodes = CONFIG["awx_workflow_job_templates"][0]["workflow_nodes"]
    ids = {n["identifier"] for n in nodes}
    for node in nodes:
        ujt = node["unified_job_template"]
        if ujt["type"] == "job_template":
            assert ujt["name"] in templates
        for nxt in node.get("related", {}).get("success_nodes", []):
            assert nxt["identifier"] in ids


def test_release_workflow_gates_prod_behind_an_approval() -> None:
    nodes = {n["identifier"]: n for n in CONFIG["awx_workflow_job_templates"][0]["workflow_nodes"]}
    order, current = [], "build"
    while current:
        order.append(nodes[current]["unified_job_template"]["type"])
        nxt = nodes[current].get("related", {}).get("success_nodes", [])
        current = nxt[0]["identifier"] if nxt else None
    assert order == ["job_template", "job_template", "workflow_approval", "job_template"]
    assert nodes["deploy-prod"]["unified_job_template"]["name"] == "thinkus - Deploy prod"


def test_schedules_follow_the_seed_backup_policy() -> None:
    rrules = {s["name"]: s["rrule"] for s in CONFIG["awx_schedules"]}
    assert "FREQ=DAILY;INTERVAL=1" in rrules["thinkus - PostgreSQL full backup (daily)"]
    assert "FREQ=HOURLY;INTERVAL=1" in rrules["thinkus - PostgreSQL hourly backup"]
    assert "FREQ=HOURLY;INTERVAL=6" in rrules["thinkus - Redis snapshot (every 6 hours)"]
    assert "FREQ=WEEKLY" in rrules["thinkus - Restore drill (weekly)"]


def test_playbook_passes_every_configured_key_to_its_module() -> None:
    """A key in the data that the playbook does not pass would be silently ignored."""
    tasks = {t["name"]: t for t in PLAYBOOK[0]["tasks"]}
    passed: dict[str, set[str]] = {}
    for task in tasks.values():
        for fqcn, args in task.items():
            if fqcn.startswith("awx.awx."):
                passed[fqcn.removeprefix("awx.awx.")] = set(args)
    for key, module in LISTS.items():
        for item in CONFIG[key]:
            missing = set(item) - passed[module]
            assert not missing, f"{key} entry {item['name']!r}: playbook does not pass {sorted(missing)}"


def _read_from_environment() -> str:
    """Everything that can read an environment variable in a job: inventories, roles, plugins, playbooks."""
    parts = []
    for pattern in (
        "inventories/*/group_vars/**/*.yml",
        "roles/*/defaults/*.yml",
        "playbooks/*.yml",
        "plugins/**/*.py",
    ):
        parts += [p.read_text() for p in ROOT.glob(pattern)]
    return "\n".join(parts)


def test_every_injected_variable_is_read_by_what_the_jobs_run() -> None:
    """A credential type that injects a variable nothing reads passes a credential into the void."""
    text = _read_from_environment()
    for ctype in CONFIG["awx_credential_types"]:
        for name in ctype["injectors"].get("env") or {}:
            assert f"'{name}'" in text or f'"{name}"' in text or f"E({name})" in text, (
                f"credential type {ctype['name']!r} injects {name}, which no inventory, role or plugin reads"
            )


def test_every_job_template_runs_in_the_collection_ee_with_existing_files() -> None:
    ees = {e["name"]: e for e in CONFIG["awx_execution_environments"]}
    sources = {s["inventory"]: s["source_path"] for s in CONFIG["awx_inventory_sources"]}
    for jt in CONFIG["awx_job_templates"]:
        assert jt["execution_environment"] in ees, jt["name"]
        assert (ROOT / jt["playbook"]).is_file(), f"{jt['name']}: {jt['playbook']} does not exist"
        assert (ROOT / sources[jt["inventory"]]).is_file(), f"{jt['name']}: {sources[jt['inventory']]} does not exist"
    navigator = yaml.safe_load((ROOT / "ansible-navigator.yml").read_text())["ansible-navigator"]
    image = navigator["execution-environment"]["image"]
    awx_image = CONFIG["awx_ee_image"]
    assert {e["image"] for e in ees.values()} == {"{{ awx_ee_image }}"}
    assert awx_image.endswith("/thinkus/" + image), f"AWX runs {awx_image}, ansible-navigator.yml {image}"
    passed = set(navigator["execution-environment"]["environment-variables"]["pass"])
    for ctype in CONFIG["awx_credential_types"]:
        missing = set(ctype["injectors"].get("env") or {}) - passed
        assert not missing, f"ansible-navigator.yml does not pass {sorted(missing)} ({ctype['name']})"


def test_cluster_playbooks_get_a_kubeconfig_credential() -> None:
    """deploy, rollback, backup and the drill check the cluster's identity in preflight."""
    kinds = {c["name"]: c["credential_type"] for c in CONFIG["awx_credentials"]}
    for jt in CONFIG["awx_job_templates"]:
        if jt["playbook"] in (
            "playbooks/deploy.yml",
            "playbooks/rollback.yml",
            "playbooks/backup.yml",
            "playbooks/restore_drill.yml",
        ):
            assert "Thinkus Kubeconfig" in {kinds[c] for c in jt["credentials"]}, jt["name"]


def test_schedules_pass_variables_their_playbook_reads() -> None:
    templates = {j["name"]: j for j in CONFIG["awx_job_templates"]}
    for sched in CONFIG["awx_schedules"]:
        playbook = (ROOT / templates[sched["unified_job_template"]]["playbook"]).read_text()
        for var in sched.get("extra_data", {}):
            assert var in playbook, (
                f"{sched['name']}: {var} is not read by {templates[sched['unified_job_template']]['playbook']}"
            )
