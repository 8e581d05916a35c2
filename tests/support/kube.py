# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the tests against the local cluster share: a client, a scratch namespace, polling."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .ansible import REPO_ROOT

KUBECONFIG = REPO_ROOT / ".local" / "kubeconfig"


def local_api(kubeconfig: Path = KUBECONFIG) -> client.ApiClient:
    """A client of the local cluster; fails (not skips, not hangs) when the cluster is down."""
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    client.VersionApi(api_client).get_code(_request_timeout=10)
    return api_client


@contextmanager
def scratch_namespace(api: client.ApiClient, prefix: str) -> Iterator[str]:
    """A fresh namespace name ``<prefix>-<random>``, deleted afterwards if anything created it."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        try:
            client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy and return that; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:.0f}s (last seen: {last!r})")
