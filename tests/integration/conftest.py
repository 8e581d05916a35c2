"""Fixtures shared by the integration tests (they run against the local environment)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "tests" / "k8s" / "crds" / "cert-manager"


# One line per fault case (tests/integration/test_faults.py), repeated at the end of the run.
FAULT_LINES: list[str] = []


@pytest.fixture
def fault_report() -> Callable[..., None]:
    """Record how a fault case ended: what it left behind, when the system was usable again."""

    def report(case: str, left_behind: str, usable_after: float, person_needed: str = "no") -> None:
        line = (
            f"fault: {case} | left behind: {left_behind} | usable again after {usable_after:.0f} s"
            f" | person needed: {person_needed}"
        )
        FAULT_LINES.append(line)
        print(line)

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FAULT_LINES:
        terminalreporter.section("faults")
        for line in FAULT_LINES:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that reset the cluster to empty run first, so no other test loses the state it built."""
    items.sort(key=lambda item: item.get_closest_marker("empty_cluster") is None)


@pytest.fixture(scope="session")
def cert_manager_crds() -> None:
    """cert-manager's CRDs (the test copies), applied idempotently and left installed like any add-on."""
    api = config.new_client_from_config(config_file=str(REPO_ROOT / ".local" / "kubeconfig"))
    ext = client.ApiextensionsV1Api(api)
    for path in sorted(CRD_DIR.glob("*.yaml")):
        try:
            ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        except ApiException as err:
            if err.status != 409:
                raise
    for path in sorted(CRD_DIR.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        for _attempt in range(60):
            conditions = ext.read_custom_resource_definition(name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"CRD {name} not Established")
