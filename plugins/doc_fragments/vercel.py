# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Options and attributes shared by the thinkus.ops Vercel modules."""

    # The connection and retry options of every module that talks to the Vercel REST API.
    DOCUMENTATION = r"""
options:
  token:
    description:
      - Vercel access token, sent as a Bearer token.
      - If not set, the value of the E(VERCEL_TOKEN) environment variable is used.
      - The module fails before any request when neither is set.
    type: str
  team_id:
    description:
      - Identifier of the Vercel team that owns the project, sent as the C(teamId) query parameter.
      - If not set, the value of the E(VERCEL_TEAM_ID) environment variable is used.
      - Leave unset for projects in a personal account.
    type: str
  api_url:
    description:
      - Base URL of the Vercel REST API. Change it only to talk to a test double.
    type: str
    default: https://api.vercel.com
  validate_certs:
    description:
      - Whether to validate the TLS certificate of O(api_url).
    type: bool
    default: true
  timeout:
    description:
      - Timeout in seconds of one HTTP request.
    type: float
    default: 30
  retries:
    description:
      - How many times a failed request is retried before the module fails.
      - HTTP 429 and 503 are retried after the time their C(Retry-After) header asks for (seconds
        or an HTTP date). When that is longer than O(retry_max_delay) the module fails at once,
        naming the wait, instead of retrying into a window the API says is closed.
      - Other 5xx answers, and connection errors of read requests, are retried with exponential
        backoff and jitter, each wait capped at O(retry_max_delay).
      - Creating a deployment is not retried blindly after a 5xx or a timeout; the module first
        looks for the deployment that call may have created (see M(thinkus.ops.vercel_deploy)).
      - Other 4xx answers are never retried.
    type: int
    default: 5
  retry_max_delay:
    description:
      - The longest wait in seconds between two attempts. A C(Retry-After) asking for more fails
        the task at once.
    type: float
    default: 60
notes:
  - The token is never logged or returned. Prefer E(VERCEL_TOKEN) or a value from Ansible Vault.
"""

    # The action group the modules belong to (meta/runtime.yml). Extend it together with
    # thinkus.ops.attributes, which describes check_mode, diff_mode and idempotent.
    ACTION_GROUP = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/thinkus.ops.vercel) in C(module_defaults) to set the shared options once.
    support: full
    membership:
      - thinkus.ops.vercel
"""
