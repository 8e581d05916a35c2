# Copyright (c) Thinkus platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_summary
type: aggregate
short_description: Per-stage summary of a thinkus.ops deploy, printed and written as JSON
version_added: 0.1.0
description:
  - Groups the tasks of a playbook by their stage tag (C(preflight), C(build), C(backend), C(ingress),
    C(monitoring), C(frontend), C(smoke)) and records, per stage, its wall time, how many tasks ran,
    changed, failed or were skipped, and whether it finished.
  - Adds what the playbook publishes with M(ansible.builtin.set_stats) under the key C(thinkus_deploy)
    (image digests, revisions, URLs, load test report).
  - Acts only for playbooks that publish C(thinkus_deploy) stats; other playbooks are left alone.
  - Writes the summary to C(<artifacts_dir>/deploy-summary.json), where C(artifacts_dir) comes from the
    published stats (default C(artifacts) under the current directory), and prints it at the end.
author:
  - Thinkus platform team (@thinkus-ai)
requirements:
  - enable in ansible.cfg with C(callbacks_enabled = thinkus.ops.deploy_summary)
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase

STAGES = ("preflight", "build", "backend", "ingress", "monitoring", "frontend", "smoke")


_VALIDATION = ("validate_argument_spec", "ansible.builtin.validate_argument_spec")


def _stage_of(task) -> str | None:
    tags = set(getattr(task, "tags", None) or [])
    for stage in STAGES:
        if stage in tags:
            return stage
    return None


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "thinkus.ops.deploy_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.started = time.time()
        self.stages: dict[str, dict] = {}
        self.current: str | None = None

    def _entry(self, stage: str) -> dict:
        return self.stages.setdefault(
            stage,
            {
                "status": "ok",
                "started": None,
                "ended": None,
                "tasks": 0,
                "changed": 0,
                "failed": 0,
                "skipped": 0,
                "changed_tasks": [],
            },
        )

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        # a role's argument validation runs in every play (tagged always): it alone does not
        # make a stage "run"; its failure still counts (see _record)
        if task.action in _VALIDATION:
            return
        stage = _stage_of(task)
        self.current = stage
        if stage:
            entry = self._entry(stage)
            now = time.time()
            entry["started"] = entry["started"] or now
            entry["ended"] = now

    def _record(self, result, outcome: str) -> None:
        stage = _stage_of(result._task)
        if not stage or (result._task.action in _VALIDATION and outcome != "failed"):
            return
        entry = self._entry(stage)
        entry["started"] = entry["started"] or time.time()
        entry["ended"] = time.time()
        entry["tasks"] += 1
        if outcome == "skipped":
            entry["skipped"] += 1
        elif outcome == "failed":
            entry["failed"] += 1
            entry["status"] = "failed"
        elif result._result.get("changed"):
            entry["changed"] += 1
            name = result._task.get_name()
            if name not in entry["changed_tasks"]:
                entry["changed_tasks"].append(name)

    def v2_runner_on_ok(self, result) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._record(result, "ok" if ignore_errors else "failed")

    def v2_runner_on_unreachable(self, result) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, "skipped")

    def v2_playbook_on_stats(self, stats) -> None:
        custom = (getattr(stats, "custom", None) or {}).get("_run", {})
        published = custom.get("thinkus_deploy")
        if published is None:
            return
        summary = {
            "environment": published.get("environment"),
            "check_mode": published.get("check_mode", False),
            "result": "failed" if any(s["status"] == "failed" for s in self.stages.values()) else "ok",
            "duration_seconds": round(time.time() - self.started, 1),
            "stages": {},
            "images": published.get("images", {}),
            "revisions": published.get("revisions", {}),
            "urls": published.get("urls", {}),
            "load_test": published.get("load_test", {}),
        }
        for stage in STAGES:
            entry = self.stages.get(stage)
            if not entry:
                summary["stages"][stage] = {"status": "not run"}
                continue
            summary["stages"][stage] = {
                "status": entry["status"],
                "duration_seconds": round((entry["ended"] or 0) - (entry["started"] or 0), 1),
                "tasks": entry["tasks"],
                "changed": entry["changed"],
                "failed": entry["failed"],
                "skipped": entry["skipped"],
                "changed_tasks": entry["changed_tasks"],
            }
        summary["changed"] = sum(s.get("changed", 0) for s in summary["stages"].values())
        out_dir = published.get("artifacts_dir") or os.path.join(os.getcwd(), "artifacts")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "deploy-summary.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2, sort_keys=True)
            fh.write("\n")
        self._display.banner("THINKUS DEPLOY SUMMARY")
        for stage, entry in summary["stages"].items():
            if entry["status"] == "not run":
                line = f"{stage:<11} not run"
            else:
                line = (
                    f"{stage:<11} {entry['status']:<7} {entry['duration_seconds']:>7.1f}s  "
                    f"changed={entry['changed']} tasks={entry['tasks']}"
                )
            self._display.display(line)
        for name, ref in sorted(summary["images"].items()):
            self._display.display(f"image      {name}: {ref}")
        for name, url in sorted(summary["urls"].items()):
            self._display.display(f"url        {name}: {url}")
        totals = f"result={summary['result']} changed={summary['changed']} in {summary['duration_seconds']}s"
        self._display.display(f"{totals}; written to {path}")
