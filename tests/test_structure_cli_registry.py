"""The sub-command registry is explicit: pyproject's `spotter.commands` entry points, no hidden upward import."""
import ast
from importlib.metadata import entry_points
from pathlib import Path

from spotter import cli

CLI = Path(cli.__file__)


def test_core_cli_imports_neither_gui_nor_training():
    tree = ast.parse(CLI.read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.split(".")[0] in ("gui", "training")}
    assert "__import__" not in CLI.read_text(encoding="utf-8")


def test_registry_lists_the_console_and_training_commands():
    eps = {ep.name: ep.value for ep in entry_points(group=cli.COMMAND_GROUP)}
    assert eps == {"console": "gui.cli:register_cli", "training": "training.cli:register_cli"}
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert {"replay", "listen", "console", "train", "evaluate", "export", "bench"} <= commands
