"""The soundness suite's own bookkeeping (pure, no root): every kind has a probe, every
KNOWN mark names something that exists, and the comparison sees what it must."""

from __future__ import annotations

from . import corpus, engine, known, mutations, probes


def test_every_kind_and_known_project_has_a_probe() -> None:
    assert set(mutations.ALL_KINDS) <= set(probes.PROBES)
    projects = {p.known_project for p in corpus.PROJECTS if p.known_project}
    assert projects <= set(probes.PROBES)
    for name, (project, kinds) in probes.PROBES.items():
        assert project in corpus.BY_NAME, name
        assert all(k in mutations.KINDS or k in mutations.ALL_KINDS for k in kinds), name


def test_known_marks_name_probes() -> None:
    assert set(known.KNOWN) <= set(probes.PROBES)
    assert all(reason.strip() for reason in known.KNOWN.values())


def test_the_corpus_is_big_enough() -> None:
    drawn = [p for p in corpus.PROJECTS if p.in_random and not p.known_project]
    assert len(drawn) >= 10
    text = "".join(p.dockerfile for p in corpus.PROJECTS)
    for feature in ("AS builder", "--mount=type=bind", "--mount=type=cache", "ARG ", "ENV ",
                    "ADD ", "--from="):
        assert feature in text, feature
    assert any(p.hardlinks for p in corpus.PROJECTS)
    assert any(p.symlinks for p in corpus.PROJECTS)
    assert any(any(line.startswith("!") for line in p.dockerignore or ())
               for p in corpus.PROJECTS)


def _summary(config: dict[str, object], layers: list[list[str]], ids: list[str]
             ) -> engine.ImageSummary:
    return engine.ImageSummary(
        image_id="sha256:" + "1" * 64, manifest_digest="sha256:" + "2" * 64,
        config={**config, "rootfs": {"type": "layers", "diff_ids": ids}},
        diff_ids=tuple(ids),
        layers=tuple(engine.LayerSummary(str(hash(tuple(e))), tuple(e)) for e in layers))


def test_compare_ignores_times_only() -> None:
    base = {"created": "2024-01-01T00:00:00Z", "config": {"Env": ["A=1"]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "RUN x"}]}
    later = {**base, "created": "2025-01-01T00:00:00Z",
             "history": [{"created": "2025-01-01T00:00:00Z", "created_by": "RUN x"}]}
    a = _summary(base, [["f 0 644"]], ["sha256:a"])
    assert engine.compare(a, _summary(later, [["f 0 644"]], ["sha256:b"]), exact=False) == []
    # with SOURCE_DATE_EPOCH set the diff ids must be equal too
    assert engine.compare(a, _summary(later, [["f 0 644"]], ["sha256:b"]), exact=True)
    assert engine.compare(a, _summary(base, [["f 0 600"]], ["sha256:a"]), exact=False)
    other_env = {**base, "config": {"Env": ["A=2"]}}
    assert engine.compare(a, _summary(other_env, [["f 0 644"]], ["sha256:a"]), exact=False)
    assert engine.compare(a, _summary(base, [["f 0 644"], ["g"]], ["sha256:a"]), exact=False)
