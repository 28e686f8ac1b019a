"""Stages -> a :class:`~dockyard.plan.model.BuildPlan`, the way BuildKit's dispatcher does it.

Pure: the only outside knowledge is the config of base images, asked through a callback.
Words are expanded here with BuildKit's rules: the environment for expansion is the ARGs in
scope overlaid by the config's ENV (ENV wins); RUN, CMD and ENTRYPOINT are left to the shell.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.dockerfile import instructions as ins
from dockyard.dockerfile.parser import Heredoc, parse
from dockyard.dockerfile.shell import Lexer
from dockyard.dockerfile.stages import (
    NON_ENV_ARGS,
    PROXY_ARGS,
    Dockerfile,
    ResolvedStage,
    StageGraph,
)
from dockyard.errors import DockerfileError, ExpansionError, Location
from dockyard.plan.model import (
    BaseSpec,
    BuildPlan,
    CopyOp,
    MkdirOp,
    Op,
    RunOp,
    StagePlan,
    Step,
)

#: Resolves an image reference for a platform (``os/arch[/variant]``) to (image id, full OCI
#: config JSON object); raises on failure.
ImageConfigLookup = Callable[[str, Location, str], tuple[str, dict[str, Any]]]

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def plan_build(
    graph: StageGraph,
    image_config: ImageConfigLookup,
    *,
    platform: str,
    build_args: Mapping[str, str],
    only_needed: bool = True,
    named_images: Mapping[str, str] | None = None,
) -> BuildPlan:
    """Plan every needed stage of ``graph`` for the target ``platform`` (file order).

    A stage's platform is BuildKit's: a stage built on another stage has that stage's
    platform, else its ``FROM --platform`` (e.g. ``$BUILDPLATFORM``), else the target's.
    ``named_images``: the named contexts that are images (``docker-image://REF``: lower-cased
    name -> REF); the graph's other named contexts are directories, whose files a stage
    ``FROM`` one starts with (as a first step that copies them to ``/``).
    """
    dockerfile = graph.dockerfile
    planner = _Planner(dockerfile, graph, image_config, platform, build_args)
    planner.named_images = {k.lower(): v for k, v in (named_images or {}).items()}
    plans: list[StagePlan] = []
    for rstage in graph.stages:
        if only_needed and not rstage.needed:
            plans.append(planner.skipped(rstage.index))
            continue
        plans.append(planner.plan_stage(rstage.index, plans))
    return BuildPlan(
        stages=tuple(plans),
        target=graph.target,
        warnings=graph.warnings,
        source=dockerfile.parse.source,
        filename=dockerfile.parse.filename,
        named_contexts=graph.named_contexts,
    )


@dataclass
class _State:
    """What the planner tracks while it walks one stage."""

    config: dict[str, Any]
    args: dict[str, str] = field(default_factory=dict)  # ARGs in scope, in declaration order
    cmd_set: bool = False
    # BuildKit's LLB state env: the image env, then every ENV and every ARG that has a value,
    # in Dockerfile order, the latest assignment of a key winning and moving it to the end.
    # RUN gets exactly this list and words expand against it, so an ARG re-declared after an
    # ENV of the same name overrides it for RUN (but never in the image config).
    env: dict[str, str] = field(default_factory=dict)
    # every ARG this stage declared, with or without a value, in first-declaration order:
    # BuildKit's buildArgs, which its RUN history entries list (``RUN |2 A=1 B= ...``)
    declared: dict[str, None] = field(default_factory=dict)

    def env_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.config.get("Env") or []:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def assign(self, key: str, value: str) -> None:
        self.env.pop(key, None)
        self.env[key] = value

    def expansion_env(self) -> dict[str, str]:
        return dict(self.env)

    def set_env(self, key: str, value: str) -> None:
        self.assign(key, value)
        items: list[str] = list(self.config.get("Env") or [])
        for i, item in enumerate(items):
            if item.partition("=")[0] == key:
                items[i] = f"{key}={value}"
                break
        else:
            items.append(f"{key}={value}")
        self.config["Env"] = items


class _Planner:
    def __init__(
        self,
        dockerfile: Dockerfile,
        graph: StageGraph,
        image_config: ImageConfigLookup,
        platform: str,
        build_args: Mapping[str, str],
    ) -> None:
        self.dockerfile = dockerfile
        self.graph = graph
        self.image_config = image_config
        self.platform = platform
        self.build_args = dict(build_args)
        self.globals = graph.globals_dict()
        self.lexer = Lexer(dockerfile.escape)
        self.source = dockerfile.parse.source
        self.filename = dockerfile.parse.filename
        self.vertex = 0
        self.by_name = {s.name: s.index for s in graph.stages
                        if s.name and s.name not in graph.named_contexts}
        self.named_images: dict[str, str] = {}
        self.stage_envs: dict[int, dict[str, str]] = {}  # each planned stage's final LLB env

    # ------------------------------------------------------------------ helpers
    def fail(self, message: str, location: Location, hint: str | None = None) -> DockerfileError:
        return DockerfileError(message, location, hint, source=self.source)

    def expand(self, word: str, env: Mapping[str, str], location: Location) -> str:
        try:
            return self.lexer.process_word(word, env)
        except ExpansionError as err:
            raise err.located(location, self.source) from None

    def expand_words(self, word: str, env: Mapping[str, str], location: Location) -> list[str]:
        try:
            return self.lexer.process_words(word, env)
        except ExpansionError as err:
            raise err.located(location, self.source) from None

    def skipped(self, index: int) -> StagePlan:
        rstage = self.graph.stages[index]
        return StagePlan(
            index=index,
            name=rstage.name,
            display_name=rstage.display_name,
            base=BaseSpec(kind="scratch", name=rstage.base),
            from_location=rstage.location,
            from_vertex=0,
            steps=(),
            config={},
            platform=self.platform,
            needed=False,
            depends_on=rstage.depends_on,
        )

    # ------------------------------------------------------------------ stages
    def plan_stage(self, index: int, done: list[StagePlan]) -> StagePlan:
        rstage = self.graph.stages[index]
        stage = rstage.stage
        base: BaseSpec
        base_config: dict[str, Any]
        platform = rstage.platform or self.platform
        if rstage.base_kind == "stage":
            assert rstage.base_stage is not None
            platform = done[rstage.base_stage].platform
        named_dir: str | None = None  # a named context directory the stage starts with
        base_ref = rstage.base
        if rstage.base_kind == "named" and rstage.base.lower() in self.named_images:
            base_ref = self.named_images[rstage.base.lower()]
        elif rstage.base_kind == "named":
            named_dir = rstage.base.lower()
        if rstage.base_kind == "scratch" or named_dir is not None:
            # a directory context: BuildKit's empty image config, then its files
            base = BaseSpec(kind="scratch", name=named_dir or "scratch")
            base_config = {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"}
        elif rstage.base_kind == "stage":
            assert rstage.base_stage is not None
            parent = done[rstage.base_stage]
            base = BaseSpec(kind="stage", name=parent.display_name, stage=parent.index)
            base_config = json.loads(json.dumps(parent.config))
        else:
            image_id, full = self.image_config(base_ref, rstage.location, platform)
            base = BaseSpec(kind="image", name=base_ref, image_id=image_id)
            base_config = json.loads(json.dumps(full.get("config") or {}))
            if not base_config.get("Env"):
                base_config["Env"] = [f"PATH={DEFAULT_PATH}"]
        state = _State(config=base_config)
        if rstage.base_kind == "stage":
            # BuildKit starts a child stage from its parent's LLB state, ARG values included,
            # then re-applies the image env on top.
            assert rstage.base_stage is not None
            state.env = dict(self.stage_envs.get(rstage.base_stage, {}))
        for item in base_config.get("Env") or []:
            key, _, value = item.partition("=")
            state.assign(key, value)
        self.vertex += 1
        from_vertex = self.vertex

        body: list[ins.Instruction] = []
        # ONBUILD triggers of the base run first, right after FROM (as BuildKit).
        triggers: list[str] = list(base_config.get("OnBuild") or [])
        state.config.pop("OnBuild", None)
        if rstage.replaced:
            triggers = []  # the stage is its named context: nothing of its own runs
        for trigger in triggers:
            body.extend(self._parse_trigger(trigger, rstage.location))
        if not rstage.replaced:
            body.extend(stage.instructions)

        count = (1 if named_dir is None else 2) + sum(
            1
            for inst in body
            if isinstance(
                inst, (ins.RunInstruction, ins.CopyInstruction, ins.AddInstruction,
                       ins.WorkdirInstruction)
            )
        )
        steps: list[Step] = []
        position = 1
        if named_dir is not None:
            position += 1
            self.vertex += 1
            steps.append(self._named_files_step(rstage, named_dir, position, count, state))
        for inst in body:
            step_op, created_by, used = self._dispatch(inst, state, rstage.index, done)
            is_op = step_op is not None or isinstance(inst, ins.WorkdirInstruction)
            if is_op:
                position += 1
                self.vertex += 1
            steps.append(
                Step(
                    vertex=self.vertex if is_op else 0,
                    stage_index=rstage.index,
                    stage_name=rstage.display_name,
                    position=position if is_op else 0,
                    count=count,
                    instruction=_instruction_name(inst),
                    display=_one_line(inst.original),
                    location=inst.location,
                    op=step_op,
                    created_by=created_by,
                    config=json.loads(json.dumps(state.config)),
                    used_args=tuple(sorted(used.items())),
                    arg_values=tuple(state.args.items()),
                )
            )
        self.stage_envs[rstage.index] = dict(state.env)
        return StagePlan(
            index=rstage.index,
            name=rstage.name,
            display_name=rstage.display_name,
            base=base,
            from_location=rstage.location,
            from_vertex=from_vertex,
            steps=tuple(steps),
            config=state.config,
            platform=platform,
            needed=True,
            depends_on=rstage.depends_on,
        )

    def _named_files_step(self, rstage: ResolvedStage, name: str, position: int, count: int,
                          state: _State) -> Step:
        """``FROM <named directory context>``: the stage's files are the context's, copied as
        ``COPY --from=<name> . /`` would (owned by 0:0, keyed by their content)."""
        text = f"COPY --from={name} . /"
        return Step(
            vertex=self.vertex,
            stage_index=rstage.index,
            stage_name=rstage.display_name,
            position=position,
            count=count,
            instruction="COPY",
            display=text,
            location=rstage.location,
            op=CopyOp(is_add=False, sources=(".",), heredocs=(), dest="/", workdir="/",
                      chown=None, chmod=None, link=False, parents=False, excludes=(),
                      source_kind="named-context", source_name=name, source_stage=None),
            created_by=f"{text} # buildkit",
            config=json.loads(json.dumps(state.config)),
        )

    def _parse_trigger(self, trigger: str, location: Location) -> list[ins.Instruction]:
        try:
            result = parse(trigger + "\n", self.filename)
            return [
                ins.parse_instruction(node, self.filename, result.directives.escape)
                for node in result.nodes
            ]
        except DockerfileError as err:
            shown = trigger if len(trigger) <= 80 else trigger[:77] + "..."
            raise self.fail(f"invalid ONBUILD trigger {shown!r} in the base image: "
                            f"{err.message}", location) from None

    # ------------------------------------------------------------------ dispatch
    def _dispatch(
        self, inst: ins.Instruction, state: _State, stage_index: int, done: list[StagePlan]
    ) -> tuple[Op | None, str, dict[str, str]]:
        cfg = state.config
        loc = inst.location
        env = state.expansion_env()
        used: dict[str, str] = {}
        match inst:
            case ins.EnvInstruction(pairs=pairs):
                parts = []
                # every pair expands with the environment from before the instruction
                for key, value in pairs:
                    expanded = self.expand(value, env, loc)
                    key = self.expand(key, env, loc)
                    state.set_env(key, expanded)
                    parts.append(f"{key}={expanded}")
                return None, "ENV " + " ".join(parts), used
            case ins.ArgInstruction(args=args):
                parts = []
                for key, default in args:
                    state.declared.setdefault(key, None)
                    arg_value: str | None
                    if key in self.build_args:
                        arg_value = self.build_args[key]
                    elif default is not None:
                        arg_value = self.expand(default, state.expansion_env(), loc)
                    else:
                        arg_value = self.globals.get(key)
                    if arg_value is None:
                        state.args.pop(key, None)
                        parts.append(key)
                    else:
                        state.args[key] = arg_value
                        if key not in NON_ENV_ARGS:  # as BuildKit: declared, not in the env
                            state.assign(key, arg_value)
                        parts.append(f"{key}={arg_value}" if default is not None else key)
                return None, "ARG " + " ".join(parts), used
            case ins.LabelInstruction(pairs=pairs):
                labels = dict(cfg.get("Labels") or {})
                parts = []
                for key, value in pairs:
                    k = self.expand(key, env, loc)
                    v = self.expand(value, env, loc)
                    labels[k] = v
                    parts.append(f"{k}={v}")
                cfg["Labels"] = labels
                return None, "LABEL " + " ".join(parts), used
            case ins.MaintainerInstruction(name=name):
                cfg["_author"] = self.expand(name, env, loc)
                return None, f"MAINTAINER {cfg['_author']}", used
            case ins.ExposeInstruction(ports=ports):
                exposed = dict(cfg.get("ExposedPorts") or {})
                for word in ports:
                    for port in self.expand_words(word, env, loc):
                        for p in _expand_port(port, loc, self):
                            exposed[p] = {}
                cfg["ExposedPorts"] = exposed
                return None, "EXPOSE " + " ".join(sorted(exposed)), used
            case ins.VolumeInstruction(paths=paths):
                volumes = dict(cfg.get("Volumes") or {})
                for word in paths:
                    path = self.expand(word, env, loc).strip()
                    if not path:
                        raise self.fail("VOLUME specified can not be an empty string", loc)
                    volumes[path] = {}
                cfg["Volumes"] = volumes
                return None, "VOLUME " + json.dumps(list(paths)), used
            case ins.UserInstruction(user=user):
                cfg["User"] = self.expand(user, env, loc)
                return None, f"USER {cfg['User']}", used
            case ins.WorkdirInstruction(path=path):
                expanded = self.expand(path, env, loc)
                current = cfg.get("WorkingDir") or "/"
                new = posixpath.normpath(posixpath.join(current, expanded))
                if new.startswith("//"):
                    new = "/" + new.lstrip("/")
                cfg["WorkingDir"] = new
                return MkdirOp(path=new, user=cfg.get("User") or ""), f"WORKDIR {new}", used
            case ins.CmdInstruction(command=command, prepends_shell=shell_form):
                cfg["Cmd"] = self._command(command, shell_form, cfg)
                state.cmd_set = True
                return None, "CMD " + json.dumps(cfg["Cmd"]), used
            case ins.EntrypointInstruction(command=command, prepends_shell=shell_form):
                cfg["Entrypoint"] = self._command(command, shell_form, cfg)
                if not state.cmd_set:
                    cfg.pop("Cmd", None)
                return None, "ENTRYPOINT " + json.dumps(cfg["Entrypoint"]), used
            case ins.ShellInstruction(shell=shell):
                cfg["Shell"] = list(shell)
                return None, "SHELL " + json.dumps(list(shell)), used
            case ins.StopSignalInstruction(signal=signal):
                cfg["StopSignal"] = self.expand(signal, env, loc)
                return None, f"STOPSIGNAL {cfg['StopSignal']}", used
            case ins.HealthcheckInstruction() as hc:
                cfg["Healthcheck"] = _healthcheck(hc, cfg)
                return None, "HEALTHCHECK " + json.dumps(cfg["Healthcheck"]), used
            case ins.OnbuildInstruction(expression=expression):
                triggers = list(cfg.get("OnBuild") or [])
                triggers.append(expression)
                cfg["OnBuild"] = triggers
                return None, f"ONBUILD {expression}", used
            case ins.RunInstruction() as run:
                run_op, used = self._run(run, state)
                return run_op, f"RUN {run_history(run_op.args, state)} # buildkit", used
            case ins.CopyInstruction() | ins.AddInstruction():
                copy_op = self._copy(inst, state, stage_index)
                what = "ADD" if copy_op.is_add else "COPY"
                srcs = " ".join(copy_op.sources + tuple(h.name for h in copy_op.heredocs))
                return copy_op, f"{what} {srcs} {copy_op.dest} # buildkit", used
            case ins.FromInstruction():
                raise self.fail("unexpected FROM inside a stage", loc)
        raise self.fail(f"unsupported instruction {type(inst).__name__}", loc)

    def _command(
        self, command: tuple[str, ...], shell_form: bool, cfg: Mapping[str, Any]
    ) -> list[str]:
        if shell_form:
            shell = list(cfg.get("Shell") or DEFAULT_SHELL)
            return [*shell, command[0] if command else ""]
        return list(command)

    def _run(self, run: ins.RunInstruction, state: _State) -> tuple[RunOp, dict[str, str]]:
        cfg = state.config
        loc = run.location
        env_map = state.env_map()
        shell = tuple(cfg.get("Shell") or DEFAULT_SHELL)
        script_files: list[tuple[str, str]] = []
        if run.prepends_shell:
            text = run.command[0] if run.command else ""
            if run.heredocs:
                only = len(run.heredocs) == 1 and _is_bare_heredoc(text, run.heredocs[0])
                if only and run.heredocs[0].content.startswith("#!"):
                    path = f"/dev/pipes/{run.heredocs[0].name}"
                    script_files.append((path, run.heredocs[0].content))
                    args: tuple[str, ...] = (path,)
                    command_text = f"{text}\n{run.heredocs[0].content}{run.heredocs[0].name}"
                elif only:
                    body = run.heredocs[0].content
                    args = (*shell, body)
                    command_text = f"{text}\n{body}{run.heredocs[0].name}"
                else:
                    full = text + "\n" + "".join(h.content + h.name + "\n" for h in run.heredocs)
                    args = (*shell, full)
                    command_text = full.rstrip("\n")
            else:
                args = (*shell, text)
                command_text = text
        else:
            args = tuple(run.command)
            command_text = json.dumps(list(run.command))

        # As BuildKit: every ARG in scope is in the RUN's environment (the LLB state env), so
        # in its key, whether the command text names it or not (a script, make or go build
        # reads it too). The predefined proxy ARGs passed with --build-arg but not declared
        # reach the process only (BuildKit's ProxyEnv, which its exec key leaves out).
        process_env = [f"{key}={value}" for key, value in state.env.items()]
        key_env = list(process_env)
        used: dict[str, str] = {}  # the build args among them, for miss explanations
        for key, value in state.env.items():
            if key in state.args and (key not in env_map or env_map[key] != value):
                used[key] = value
        proxies: list[str] = []
        for key in PROXY_ARGS:
            if key in self.build_args and key not in state.env:
                process_env.append(f"{key}={self.build_args[key]}")
                proxies.append(f"{key}={self.build_args[key]}")
        exp_env = state.expansion_env()
        mounts = tuple(self.expand(m, exp_env, loc) for m in run.mounts)
        network = (self.expand(run.network, exp_env, loc) if run.network else "default").lower()
        if network not in ("default", "none", "host"):
            raise self.fail(f"unsupported network mode {network!r}", loc,
                            hint="use --network=default, none or host")
        security = (self.expand(run.security, exp_env, loc) if run.security else "sandbox")
        security = security.lower()
        if security not in ("sandbox", "insecure"):
            raise self.fail(f"unsupported security mode {security!r}", loc)
        return (
            RunOp(
                args=args,
                env=tuple(process_env),
                key_env=tuple(key_env),
                user=cfg.get("User") or "",
                workdir=cfg.get("WorkingDir") or "/",
                network=network,
                security=security,
                mounts=mounts,
                script_files=tuple(script_files),
                command_text=command_text,
                proxy_digest=_proxy_digest(proxies),
            ),
            used,
        )

    def _copy(
        self, inst: ins.CopyInstruction | ins.AddInstruction, state: _State, stage_index: int
    ) -> CopyOp:
        loc = inst.location
        env = state.expansion_env()
        cfg = state.config
        sources: list[str] = []
        for word in inst.sources:
            sources.extend(self.expand_words(word, env, loc))
        dest_words = self.expand_words(inst.dest, env, loc)
        dest = " ".join(dest_words) if dest_words else ""
        if not dest:
            raise self.fail(f"{_instruction_name(inst)} requires a destination", loc)
        heredocs: list[Heredoc] = []
        for doc in inst.heredocs:
            content = doc.content
            if doc.expand:
                try:
                    content = Lexer(self.dockerfile.escape, raw_quotes=True,
                                    skip_process_quotes=True).process_word(content, env)
                except ExpansionError as err:
                    raise err.located(loc, self.source) from None
            heredocs.append(Heredoc(doc.name, content, doc.expand, doc.chomp,
                                    doc.file_descriptor))
        # heredoc names appear among the raw sources as "<<EOF"; drop them there
        names = {f"<<{h.name}" for h in inst.heredocs} | {f"<<-{h.name}" for h in inst.heredocs}
        sources = [s for s in sources if s not in names and not _is_heredoc_word(s, inst.heredocs)]
        chown = self.expand(inst.chown, env, loc) if inst.chown else None
        chmod = self.expand(inst.chmod, env, loc) if inst.chmod else None
        excludes = tuple(self.expand(e, env, loc) for e in inst.exclude)
        kind = "context"
        source_name: str | None = None
        source_stage: int | None = None
        if isinstance(inst, ins.CopyInstruction) and inst.from_:
            ref = self.expand(inst.from_, env, loc)
            idx = self._stage_ref(ref, stage_index)
            if idx is not None:
                kind, source_name, source_stage = "stage", str(idx), idx
            else:
                kind, source_name = "image", ref
        if not sources and not heredocs:
            raise self.fail(f"{_instruction_name(inst)} requires at least one source", loc)
        return CopyOp(
            is_add=isinstance(inst, ins.AddInstruction),
            sources=tuple(sources),
            heredocs=tuple(heredocs),
            dest=dest,
            workdir=cfg.get("WorkingDir") or "/",
            chown=chown,
            chmod=chmod,
            link=inst.link,
            parents=inst.parents,
            excludes=excludes,
            source_kind=kind,  # type: ignore[arg-type]
            source_name=source_name,
            source_stage=source_stage,
            checksum=(self.expand(inst.checksum, env, loc)
                      if isinstance(inst, ins.AddInstruction) and inst.checksum else None),
            keep_git_dir=isinstance(inst, ins.AddInstruction) and inst.keep_git_dir,
            user=cfg.get("User") or "",
        )

    def _stage_ref(self, ref: str, current: int) -> int | None:
        lowered = ref.lower()
        if lowered in self.by_name:
            return self.by_name[lowered]
        if ref.isdigit():
            return int(ref)
        return None


def _proxy_digest(proxies: list[str]) -> str:
    """The proxy args a RUN's process gets without an ARG: BuildKit leaves them out of its
    key (so a proxy change never rebuilds, and its result can be stale: a RUN that writes
    one out, or whose result depends on the proxy, is reused); dockyard keys their digest
    (never the values: a proxy URL may hold a password)."""
    if not proxies:
        return ""
    import hashlib

    return "sha256:" + hashlib.sha256("\0".join(sorted(proxies)).encode(
        "utf-8", "surrogateescape")).hexdigest()


def _is_bare_heredoc(text: str, doc: Heredoc) -> bool:
    word = text.strip()
    return word.lstrip("0123456789") in (
        f"<<{doc.name}", f"<<-{doc.name}", f"<<\"{doc.name}\"", f"<<-\"{doc.name}\"",
        f"<<'{doc.name}'", f"<<-'{doc.name}'",
    )


def _is_heredoc_word(word: str, docs: tuple[Heredoc, ...]) -> bool:
    stripped = word.lstrip("0123456789")
    if not stripped.startswith("<<"):
        return False
    name = stripped[2:].lstrip("-").strip("'\"")
    return any(d.name == name for d in docs)


def _instruction_name(inst: ins.Instruction) -> str:
    name = type(inst).__name__.removesuffix("Instruction").upper()
    return {"STOPSIGNAL": "STOPSIGNAL"}.get(name, name)


def _one_line(text: str) -> str:
    first, _, rest = text.partition("\n")
    return first + (" ..." if rest.strip() else "")


def _expand_port(port: str, loc: Location, planner: _Planner) -> list[str]:
    proto = "tcp"
    if "/" in port:
        port, proto = port.split("/", 1)
        proto = proto.lower()
    if ":" in port:
        port = port.rsplit(":", 1)[1]
    if "-" in port:
        lo, _, hi = port.partition("-")
        if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
            raise planner.fail(f"invalid port range {port!r}", loc)
        return [f"{p}/{proto}" for p in range(int(lo), int(hi) + 1)]
    if not port.isdigit():
        raise planner.fail(f"invalid containerPort: {port}", loc)
    return [f"{int(port)}/{proto}"]


def _healthcheck(hc: ins.HealthcheckInstruction, cfg: Mapping[str, Any]) -> dict[str, Any]:
    if hc.test is None or tuple(hc.test) == ("NONE",):
        return {"Test": ["NONE"]}
    out: dict[str, Any] = {"Test": list(hc.test)}
    if hc.interval:
        out["Interval"] = hc.interval
    if hc.timeout:
        out["Timeout"] = hc.timeout
    if hc.start_period:
        out["StartPeriod"] = hc.start_period
    if hc.start_interval:
        out["StartInterval"] = hc.start_interval
    if hc.retries:
        out["Retries"] = hc.retries
    return out


def run_history(args: tuple[str, ...], state: _State) -> str:
    """A RUN's history text as BuildKit writes it (``runCommandString``): the stage's
    declared ARGs as ``|N K=V ...`` (the value the RUN sees, else the ARG's own value, empty
    when it has none), then
    the argv joined by spaces (``/bin/sh -c CMD`` for the shell form). Not part of any cache
    key: keys are made of the op itself (``solver/keys.py``)."""
    pairs = [f"{key}={state.env.get(key, state.args.get(key, ''))}" for key in state.declared]
    head = [f"|{len(pairs)}", *pairs] if pairs else []
    return " ".join([*head, *args])
