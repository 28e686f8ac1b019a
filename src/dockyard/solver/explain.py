"""Why a step missed: this build's key inputs compared with the previous build's.

The previous build of the same Dockerfile and target left, per step, what its key was made
of (:meth:`Explainer.history_record`); a miss names the first input that differs, in the
order docs/cache.md lists ("Reading the explanations").

Steps are paired with the previous build's by identity, not position: per stage, the two
builds' steps (their instruction text) are aligned as a diff aligns lines
(:class:`difflib.SequenceMatcher`), so inserting a step makes only that step new and the
ones after it "an earlier step changed", never "the instruction changed". A step that was
moved is paired with its old self; an edited one with the step it replaced.

No value of a build arg or variable whose name looks secret (BuildKit's
``SecretsUsedInArgOrEnv`` words, :mod:`dockyard.dockerfile.sensitive`) is ever shown.
"""

from __future__ import annotations

import difflib
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dockyard.dockerfile.sensitive import looks_secret
from dockyard.plan.model import BuildPlan, StagePlan, Step


def step_id(stage: StagePlan, step: Step) -> str:
    """A step's name in the build history: stage index / position in the stage."""
    return f"{stage.index}/{step.position}"


@dataclass(frozen=True)
class Pairing:
    """The previous build's step a step of this build corresponds to."""

    previous: Mapping[str, Any] | None  # its record; None for a new step
    how: Literal["same", "edited", "moved", "new"]
    # steps just before this one in the previous build that are gone from here: (their
    # text, the line they moved to or None when they were deleted)
    departed: tuple[tuple[str, int | None], ...] = ()


class Explainer:
    """Explains misses against the previous build's history record."""

    def __init__(self, previous: Mapping[str, Any] | None, plan: BuildPlan) -> None:
        self.previous: Mapping[str, Any] = previous or {}
        steps = self.previous.get("steps")
        self._steps: Mapping[str, Any] = steps if isinstance(steps, Mapping) else {}
        self.plan = plan
        self._pairings: dict[int, dict[str, Pairing]] = {}

    # ------------------------------------------------------------------ pairing
    def pairing(self, stage: StagePlan, step: Step) -> Pairing:
        """How ``step`` pairs with the previous build's steps of its stage."""
        pairs = self._pairings.get(stage.index)
        if pairs is None:
            pairs = self._pairings[stage.index] = self._align(stage)
        return pairs.get(step_id(stage, step)) or Pairing(None, "new")

    def previous_step(self, stage: StagePlan, step: Step) -> Mapping[str, Any] | None:
        """The previous build's record of the step this one corresponds to, if any."""
        return self.pairing(stage, step).previous

    def _align(self, stage: StagePlan) -> dict[str, Pairing]:
        prefix = f"{stage.index}/"
        old: list[Mapping[str, Any]] = [
            info for _, info in sorted(
                ((int(vid[len(prefix):]), info) for vid, info in self._steps.items()
                 if vid.startswith(prefix) and vid[len(prefix):].isdigit()
                 and isinstance(info, Mapping)),
                key=lambda item: item[0],
            )
        ]
        new = [s for s in stage.steps if s.op is not None]
        old_text = [str(info.get("display")) for info in old]
        new_text = [s.display for s in new]
        paired: dict[int, tuple[int, str]] = {}  # new index -> (old index, how)
        loose_new: list[int] = []
        loose_old: list[int] = []
        blocks: list[tuple[list[int], list[int]]] = []
        matcher = difflib.SequenceMatcher(None, old_text, new_text, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                for k in range(i2 - i1):
                    paired[j1 + k] = (i1 + k, "same")
            else:
                loose_old.extend(range(i1, i2))
                loose_new.extend(range(j1, j2))
                if tag == "replace":
                    blocks.append((list(range(i1, i2)), list(range(j1, j2))))
        # a step that moved: the same text among the steps the alignment left over
        for j in list(loose_new):
            for i in loose_old:
                if old_text[i] == new_text[j]:
                    paired[j] = (i, "moved")
                    loose_new.remove(j)
                    loose_old.remove(i)
                    break
        # an edited step: what is left of a replaced block, in order
        for olds, news in blocks:
            left_old = [i for i in olds if i in loose_old]
            left_new = [j for j in news if j in loose_new]
            for i, j in zip(left_old, left_new, strict=False):
                paired[j] = (i, "edited")
                loose_old.remove(i)
        new_of_old = {i: j for j, (i, _) in paired.items()}
        out: dict[str, Pairing] = {}
        last_old = -1
        for j, step in enumerate(new):
            if j not in paired:
                out[step_id(stage, step)] = Pairing(None, "new")
                continue
            i, how = paired[j]
            departed: list[tuple[str, int | None]] = []
            if i > last_old:
                for k in range(last_old + 1, i):
                    if k not in new_of_old:
                        departed.append((old_text[k], None))
                    elif new_of_old[k] > j:
                        departed.append((old_text[k], new[new_of_old[k]].location.start_line))
                last_old = i
            out[step_id(stage, step)] = Pairing(
                old[i], "moved" if how == "moved" else "edited" if how == "edited" else "same",
                tuple(departed))
        return out

    # ------------------------------------------------------------------ explaining
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
        pairing = self.pairing(stage, step)
        prev = pairing.previous
        if prev is None:
            return f"{prefix}: no earlier build of this step in this store"
        if prev.get("display") != step.display:
            return f"{prefix}: the instruction changed (was: {prev.get('display')})"
        comps, pcomps = info["components"], prev.get("components") or {}
        # ARG values first: "ARG VERSION changed 1.0 -> 1.1"
        old_args, new_args = prev.get("used_args") or {}, info.get("used_args") or {}
        for name in sorted(set(old_args) | set(new_args)):
            if old_args.get(name) != new_args.get(name):
                return f"{prefix}: {_change('ARG', name, old_args, new_args)}"
        if "files" in info and comps.get("content") != pcomps.get("content"):
            from dockyard.context.hashing import explain_diff_items

            try:
                old: Any = prev.get("files")  # not `or {}`: its truth would decode it all
                if old is None:
                    old = {}
                items = old.iter_items() if hasattr(old, "iter_items") else old.items()
                lines = explain_diff_items(items, info["files"])
            except (TypeError, ValueError, KeyError, zlib.error):
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
                                  ("proxy", "a proxy build arg (HTTP_PROXY...)"),
                                  ("dest", "the destination"), ("chown", "--chown"),
                                  ("chmod", "--chmod"), ("platform", "the platform"),
                                  ("source_date_epoch", "SOURCE_DATE_EPOCH")):
            if comps.get(field_name) != pcomps.get(field_name):
                if field_name == "env":
                    return f"{prefix}: {_env_change(pcomps.get('env') or [], comps.get('env') or [])}"
                if field_name == "network":
                    return (f"{prefix}: the network mode changed {pcomps.get('network')} -> "
                            f"{comps.get('network')}")
                return f"{prefix}: {label} changed"
        if info.get("parent") != prev.get("parent"):
            if pairing.how == "moved":
                return f"{prefix}: the step moved (it was at line {prev.get('line')})"
            if first_miss_line is not None and first_miss_line < step.location.start_line:
                return f"{prefix}: an earlier step changed (line {first_miss_line})"
            if pairing.departed:
                text, moved_to = pairing.departed[-1]
                if moved_to is None:
                    return f"{prefix}: an earlier step was removed (was: {text})"
                return f"{prefix}: an earlier step moved to line {moved_to} ({text})"
            return f"{prefix}: the base image or an earlier step changed"
        if info["key"] == prev.get("key"):
            return f"{prefix}: its cache record was pruned"
        return f"{prefix}: its inputs changed"

    # ------------------------------------------------------------------ history
    def history_record(self, records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """This build's steps (``records``: step id -> key inputs) for the next build's
        explanations: every step of the plan, those this build did not reach (it failed
        first) with their previous record, so the next build pairs against the whole
        Dockerfile. A COPY's file manifest is only serialised when its content changed;
        otherwise the previous JSON is kept as is (a no-op rebuild of a big context must not
        re-encode thousands of entries)."""
        from dockyard.context.hashing import ManifestJson

        steps: dict[str, dict[str, Any]] = {}
        layer_steps = [(stage, step) for stage in self.plan.stages if stage.needed
                       for step in stage.steps if step.op is not None]
        for stage, step in layer_steps:
            vid = step_id(stage, step)
            prev = self.previous_step(stage, step)
            record = records.get(vid)
            if record is None:
                if prev is not None:
                    steps[vid] = dict(prev)
                continue
            info = dict(record)
            if "files" in info:
                pinfo = prev or {}
                same = (pinfo.get("components") or {}).get("content") == info[
                    "components"].get("content")
                if same and "files" in pinfo:
                    info["files"] = pinfo["files"]
                else:
                    info["files"] = ManifestJson(info["files"])
            steps[vid] = info
        return {"steps": steps, "time": time.time()}


def _change(kind: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``ARG V changed 1.0 -> 1.1``; only the name when ``V`` looks secret."""
    secret = looks_secret(name)
    if kind == "ENV" and name not in old:
        return f"ENV {name} was added"
    if kind == "ENV" and name not in new:
        return f"ENV {name} was removed"
    if secret:
        return f"{kind} {name} changed (its value is not shown: the name looks secret)"
    return f"{kind} {name} changed {old.get(name, '(unset)')} -> {new.get(name, '(unset)')}"


def _env_change(old: list[str], new: list[str]) -> str:
    o = dict(item.partition("=")[::2] for item in old)
    n = dict(item.partition("=")[::2] for item in new)
    for k in sorted(set(o) | set(n)):
        if o.get(k) != n.get(k):
            return _change("ENV", k, o, n)
    return "the environment changed"
