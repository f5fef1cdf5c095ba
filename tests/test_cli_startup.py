"""What `sdl` imports before it answers: a command imports its own module only, `sdl --help` none, and a
lab-service command without a service neither 0MQ nor the API's models (the figures: benchmarks/cli.py)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdl.cli import COMMANDS, REPORTED, build_parser

#: Imports that cost a tenth of a second or more each, none of which `sdl --help` needs.
HEAVY = ("bluesky", "numpy", "zmq", "pydantic", "rich", "sdl.api.models", "sdl.store", "sdl.spec.campaign")


def loaded_after(tmp_path: Path, *argv: str) -> set[str]:
    """The modules a fresh interpreter has loaded once `sdl ARGV` has answered."""
    script = (
        "import json, sys\n"
        "from sdl.cli import main\n"
        "try:\n"
        f"    main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_sdl_help_imports_no_command_module_and_nothing_heavy(tmp_path: Path) -> None:
    modules = loaded_after(tmp_path, "--help")
    commands = sorted(m for m in modules if m.startswith("sdl.cli.") and m != "sdl.cli.common")
    assert commands == [], commands
    assert heavy_in(modules) == []


def test_status_without_a_lab_service_fails_before_importing_the_client(tmp_path: Path) -> None:
    modules = loaded_after(tmp_path, "status", "--data-dir", str(tmp_path / "no-service"))
    assert "sdl.cli.control" in modules
    assert heavy_in(modules) == []


def test_a_command_imports_its_own_module_only(tmp_path: Path) -> None:
    command_modules = {f"sdl.cli.{module}" for module, _ in COMMANDS.values()}
    assert loaded_after(tmp_path, "schema") & command_modules == {"sdl.cli.inspect"}


def test_the_command_list_is_what_the_modules_register() -> None:
    parser = build_parser()  # every module, in full
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    registered = {
        name: (sub.get_default("handler"), next(c.help for c in action._choices_actions if c.dest == name))
        for name, sub in action.choices.items()
    }
    assert list(registered) == list(COMMANDS)
    for name, (handler, summary) in registered.items():
        module, listed = COMMANDS[name]
        assert summary == listed, name
        if handler is not None:  # commands with actions of their own (keys, sila) have theirs below
            assert handler.__module__ == f"sdl.cli.{module}", name


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_parses_with_only_its_module(command: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser(command).parse_args([command, "--help"])
    assert exit_.value.code == 0


def test_every_reported_error_names_an_exception_class() -> None:
    import importlib

    for path in REPORTED:
        module, _, name = path.partition(":")
        found = getattr(importlib.import_module(module), name)
        assert isinstance(found, type) and issubclass(found, Exception), path
