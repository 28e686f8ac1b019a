"""docs/cli.md is generated from the argparse parsers and must be up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs",
                                                  REPO / "scripts" / "gen-cli-docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    expected = _generator().render()
    current = (REPO / "docs" / "cli.md").read_text()
    assert current == expected, "docs/cli.md is out of date: run scripts/gen-cli-docs.py"


def test_cli_reference_covers_every_command_and_flag() -> None:
    from dockyard.cli.main import COMMANDS, build_parser

    text = _generator().render()
    for name in COMMANDS:
        assert f"\n## dockyard {name}\n" in text, name
    # spot-check that real option strings of a parser reach the page
    build = build_parser("build")
    for action in build._actions:
        for option in action.option_strings:
            assert option in text, option


def _man_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_man", REPO / "scripts" / "gen-man.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_man_page_is_up_to_date() -> None:
    expected = _man_generator().render()
    current = (REPO / "docs" / "dockyard.1").read_text()
    assert current == expected, "docs/dockyard.1 is out of date: run scripts/gen-man.py"


def test_man_page_covers_every_command_and_is_valid_roff() -> None:
    import shutil
    import subprocess

    from dockyard.cli.main import COMMANDS

    text = _man_generator().render()
    for name in COMMANDS:
        assert f"\n.SS dockyard {name}\n" in text, name
    if shutil.which("groff") is None:
        return
    warnings = subprocess.run(["groff", "-man", "-ww", "-z"], input=text, text=True,
                              capture_output=True, check=True).stderr
    assert warnings == ""
