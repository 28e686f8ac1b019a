"""Why a step missed: this build's key inputs compared with the previous build's.

The previous build of the same Dockerfile and target left, per step, what its key was made
of (:meth:`Explainer.history_record`); a miss names the first input that differs, in the
order docs/cache.md lists ("Reading the explanations").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dockyard.plan.model import StagePlan, Step


def step_id(stage: StagePlan, step: Step) -> str:
    """A step's name in the build history: stage index / position in the stage."""
    return f"{stage.index}/{step.position}"


class Explainer:
    """Explains misses against the previous build's history record."""

    def __init__(self, previous: Mapping[str, Any] | None) -> None:
        self.previous: Mapping[str, Any] = previous or {}
        self._steps: Mapping[str, Any] = self.previous.get("steps") or {}

    def previous_step(self, stage: StagePlan, step: Step) -> Mapping[str, Any] | None:
        """The previous build's record of the step this one corresponds to, if any."""
        prev = self._steps.get(step_id(stage, step))
        return prev if isinstance(prev, Mapping) else None

    def explain(
        self,
        stage: StagePlan,
        step: Step,
        info: Mapping[str, Any],
        first_miss_line: int | None,
    ) -> str:
        """Why ``step`` (whose key inputs are ``info``) missed. ``first_miss_line``: the
        first line of this stage that missed before it in this build, if any."""
        prefix = f"{step.display}"
        prev = self.previous_step(stage, step)
        if prev is None:
            return f"{prefix}: no earlier build of this step in this store"
        if prev.get("display") != step.display:
            return f"{prefix}: the instruction changed (was: {prev.get('display')})"
        comps, pcomps = info["components"], prev.get("components") or {}
        # ARG values first: "ARG VERSION changed 1.0 -> 1.1"
        old_args, new_args = prev.get("used_args") or {}, info.get("used_args") or {}
        for name in sorted(set(old_args) | set(new_args)):
            if old_args.get(name) != new_args.get(name):
                return (f"{prefix}: ARG {name} changed {old_args.get(name, '(unset)')} -> "
                        f"{new_args.get(name, '(unset)')}")
        if "files" in info and comps.get("content") != pcomps.get("content"):
            from dockyard.context.hashing import FileMeta, explain_diff

            try:
                old = {k: FileMeta.from_json(v) for k, v in (prev.get("files") or {}).items()}
                new = info["files"]
                lines = explain_diff(old, new)
            except (TypeError, ValueError, KeyError):
                lines = []
            if lines:
                count = len(lines)
                shown = ", ".join(lines[:5]) + (f", and {count - 5} more" if count > 5 else "")
                noun = "file" if count == 1 else "files"
                return f"{prefix}: {count} {noun} changed: {shown}"
            return f"{prefix}: the source files changed"
        for field_name, label in (("env", "the environment"), ("args", "the command"),
                                  ("user", "the user"), ("workdir", "the working directory"),
                                  ("mounts", "the mounts"), ("network", "the network mode"),
                                  ("dest", "the destination"), ("chown", "--chown"),
                                  ("chmod", "--chmod"), ("platform", "the platform")):
            if comps.get(field_name) != pcomps.get(field_name):
                if field_name == "env":
                    return f"{prefix}: {_env_change(pcomps.get('env') or [], comps.get('env') or [])}"
                return f"{prefix}: {label} changed"
        if info.get("parent") != prev.get("parent"):
            if first_miss_line is not None and first_miss_line < step.location.start_line:
                return f"{prefix}: an earlier step changed (line {first_miss_line})"
            return f"{prefix}: the base image or an earlier step changed"
        if info["key"] == prev.get("key"):
            return f"{prefix}: its cache record was pruned"
        return f"{prefix}: its inputs changed"

    def history_record(self, records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """This build's steps (``records``: step id -> key inputs) for the next build's
        explanations. A COPY's file manifest is only serialised when its content changed;
        otherwise the previous JSON is kept as is (a no-op rebuild of a big context must not
        re-encode thousands of entries)."""
        from dockyard.context.hashing import iter_manifest_json

        steps: dict[str, dict[str, Any]] = {}
        for vid, record in records.items():
            info = dict(record)
            if "files" in info:
                prev = self._steps.get(vid) or {}
                same = (prev.get("components") or {}).get("content") == info[
                    "components"].get("content")
                if same and "files" in prev:
                    info["files"] = prev["files"]
                else:
                    info["files"] = dict(iter_manifest_json(info["files"]))
            steps[vid] = info
        return {"steps": steps, "time": time.time()}


def _env_change(old: list[str], new: list[str]) -> str:
    o = dict(item.partition("=")[::2] for item in old)
    n = dict(item.partition("=")[::2] for item in new)
    for k in sorted(set(o) | set(n)):
        if o.get(k) != n.get(k):
            if k not in o:
                return f"ENV {k} was added"
            if k not in n:
                return f"ENV {k} was removed"
            return f"ENV {k} changed {o[k]} -> {n[k]}"
    return "the environment changed"
