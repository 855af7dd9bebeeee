"""Package layering: the runtime (spotter/) imports none of evaluation/, training/ or gui/; evaluation/ does not
import gui/; every package is in pyproject's package list (what a plain `pip install .` carries)."""
import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {"spotter": {"evaluation", "training", "gui"}, "evaluation": {"gui"}}


def imported_packages(path: Path, package: str) -> set[str]:
    """Top-level packages a module imports (relative imports resolved; importlib.import_module("x") counted)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = [package, *path.relative_to(REPO / package).parent.parts]
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            if n.level == 0:
                names.add(n.module or "")
            else:
                base = parts[:len(parts) - (n.level - 1)] if n.level - 1 < len(parts) else []
                names.add(".".join([*base, *([n.module] if n.module else [])]) or "<above the packages>")
        elif (isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) in
              ("import_module", "__import__") and n.args and isinstance(n.args[0], ast.Constant)):
            names.add(str(n.args[0].value))
    return {m.split(".")[0] for m in names}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_the_layers_above(package):
    bad = {}
    for path in sorted((REPO / package).rglob("*.py")):
        found = imported_packages(path, package) & (FORBIDDEN[package] | {"<above the packages>"})
        if found:
            bad[str(path.relative_to(REPO))] = sorted(found)
    assert not bad, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {bad}"


def test_every_package_is_installed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    on_disk = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert on_disk <= listed
