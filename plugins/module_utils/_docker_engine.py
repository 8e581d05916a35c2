# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Docker engine's address and client, shared by docker_build_image and docker_engine_info
(private to thinkus.ops): both reach the same engine for the same settings."""

from __future__ import annotations

from typing import Any

try:
    import docker

    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR: str | None = None
except ImportError as error:  # reported by the modules with missing_required_lib
    docker = None
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = str(error)

# The engine's address when neither the docker_host option nor DOCKER_HOST names one.
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def engine_client(docker_host: str | None, timeout: float) -> Any:
    """A docker.APIClient for ``docker_host`` (else the default socket), at the API version the engine speaks."""
    return docker.APIClient(base_url=docker_host or DEFAULT_DOCKER_HOST, version="auto", timeout=timeout)
