"""Miss explanations (no root): steps pair with the previous build's by identity, as a diff
aligns lines, so an inserted, deleted or moved step names the real cause; values of build
args whose names look secret are never shown.

The builds are simulated with the solver's own key rules on RUN-only Dockerfiles: a step
hits when its key was recorded by an earlier build, and its "layer" is a digest of its key.
"""

from __future__ import annotations

from typing import Any

from test_planner import make_plan

from dockyard.plan.model import RunOp
from dockyard.solver import keys
from dockyard.solver.explain import Explainer, step_id
from dockyard.solver.ops.run import network_mode


class Store:
    """What a run of simulated builds keeps: the cache keys and the last history record."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.history: dict[str, Any] | None = None

    def build(self, text: str, build_args: dict[str, str] | None = None) -> dict[int, str | None]:
        """Build ``text``; returns line -> miss reason (None for a hit)."""
        plan = make_plan(text, build_args)
        explainer = Explainer(self.history, plan)
        records: dict[str, dict[str, Any]] = {}
        reasons: dict[int, str | None] = {}
        finals: dict[int, str] = {}
        for stage in plan.stages:
            if stage.base.stage is not None:
                state = finals[stage.base.stage]
            else:
                state = keys.from_layers_key([stage.base.image_id or ""], stage.platform)
            first_miss: int | None = None
            for step in stage.steps:
                op = step.op
                if op is None:
                    continue
                assert isinstance(op, RunOp)
                comps = keys.run_components(op, [], stage.platform,
                                            network=network_mode(op, "host"),
                                            source_date_epoch=None)
                key = keys.layer_key("run", state, comps)
                info = {"instruction": step.instruction, "display": step.display,
                        "line": step.location.start_line, "key": key, "parent": state,
                        "components": comps, "used_args": dict(step.used_args)}
                if key in self.keys:
                    reasons[step.location.start_line] = None
                else:
                    reasons[step.location.start_line] = explainer.explain(
                        stage, step, info, first_miss)
                    if first_miss is None:
                        first_miss = step.location.start_line
                    self.keys.add(key)
                records[step_id(stage, step)] = info
                state = keys.chain_key(state, key, "sha256:" + key[7:])
            finals[stage.index] = state
        self.history = explainer.history_record(records)
        return reasons


def reason(text: str | None) -> str:
    assert text is not None, "the step hit"
    return text.split(": ", 1)[1]


ABC = "FROM busybox\nRUN a\nRUN b\nRUN c\nRUN d\n"


def test_inserted_step_is_new_and_later_steps_name_it() -> None:
    store = Store()
    store.build(ABC)
    got = store.build("FROM busybox\nRUN a\nRUN inserted\nRUN b\nRUN c\nRUN d\n")
    assert got[2] is None
    assert reason(got[3]) == "no earlier build of this step in this store"
    for line in (4, 5, 6):
        assert reason(got[line]) == "an earlier step changed (line 3)"
        assert "instruction changed" not in (got[line] or "")


def test_deleted_step_is_named_by_the_step_after_it() -> None:
    store = Store()
    store.build(ABC)
    got = store.build("FROM busybox\nRUN a\nRUN c\nRUN d\n")
    assert got[2] is None
    assert reason(got[3]) == "an earlier step was removed (was: RUN b)"
    assert reason(got[4]) == "an earlier step changed (line 3)"


def test_moved_step_pairs_with_its_old_self() -> None:
    store = Store()
    store.build(ABC)
    got = store.build("FROM busybox\nRUN b\nRUN a\nRUN c\nRUN d\n")
    assert reason(got[2]) == "the step moved (it was at line 3)"
    assert reason(got[3]) == "an earlier step changed (line 2)"
    assert reason(got[4]) == "an earlier step changed (line 2)"
    moved_last = Store()
    moved_last.build(ABC)
    got = moved_last.build("FROM busybox\nRUN b\nRUN c\nRUN d\nRUN a\n")
    assert reason(got[2]) == "an earlier step moved to line 5 (RUN a)"
    assert reason(got[5]) == "the step moved (it was at line 2)"


def test_edited_step_says_what_it_was() -> None:
    store = Store()
    store.build(ABC)
    got = store.build("FROM busybox\nRUN a\nRUN B2\nRUN c\nRUN d\n")
    assert reason(got[3]) == "the instruction changed (was: RUN b)"
    assert reason(got[4]) == "an earlier step changed (line 3)"


def test_inserted_and_deleted_in_other_stages_do_not_shift_pairs() -> None:
    text = "FROM busybox AS one\nRUN a\nRUN b\nFROM one\nRUN x\nRUN y\n"
    store = Store()
    store.build(text)
    got = store.build("FROM busybox AS one\nRUN new\nRUN a\nRUN b\nFROM one\nRUN x\n"
                      "RUN y\n")
    assert reason(got[2]) == "no earlier build of this step in this store"
    assert reason(got[3]) == "an earlier step changed (line 2)"
    assert reason(got[6]) == "the base image or an earlier step changed"
    assert reason(got[7]) == "an earlier step changed (line 6)"


def test_history_keeps_the_whole_dockerfile() -> None:
    """The record names every step of this Dockerfile and nothing of older ones, so the next
    build aligns against exactly the previous Dockerfile."""
    store = Store()
    store.build(ABC)
    store.build("FROM busybox\nRUN a\nRUN d\n")
    assert store.history is not None
    assert sorted(store.history["steps"]) == ["0/2", "0/3"]
    got = store.build("FROM busybox\nRUN a\nRUN x\nRUN d\n")
    assert reason(got[3]) == "no earlier build of this step in this store"
    assert reason(got[4]) == "an earlier step changed (line 3)"


def test_changed_arg_value_is_shown_unless_the_name_looks_secret() -> None:
    text = "FROM busybox\nARG VERSION\nARG NPM_TOKEN\nRUN make\n"
    store = Store()
    store.build(text, {"VERSION": "1", "NPM_TOKEN": "old-s3cret-123"})
    got = store.build(text, {"VERSION": "2", "NPM_TOKEN": "old-s3cret-123"})
    assert reason(got[4]) == "ARG VERSION changed 1 -> 2"
    got = store.build(text, {"VERSION": "2", "NPM_TOKEN": "new-s3cret-456"})
    assert reason(got[4]) == ("ARG NPM_TOKEN changed (its value is not shown: the name "
                              "looks secret)")
    assert "s3cret" not in (got[4] or "")


def test_changed_secret_env_value_is_not_shown() -> None:
    store = Store()
    store.build("FROM busybox\nENV API_KEY=old-s3cret\nENV MODE=a\nRUN make\n")
    got = store.build("FROM busybox\nENV API_KEY=new-s3cret\nENV MODE=a\nRUN make\n")
    assert reason(got[4]) == "ENV API_KEY changed (its value is not shown: the name looks secret)"
    got = store.build("FROM busybox\nENV API_KEY=new-s3cret\nENV MODE=b\nRUN make\n")
    assert reason(got[4]) == "ENV MODE changed a -> b"
