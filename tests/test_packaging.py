"""Every third-party package the code imports is declared in pyproject.toml, so a fresh
``pip install tessera`` cannot fail at the first import of a module we did not test there."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "streams", "serving", "tessera")


def _imported_top_levels() -> dict[str, str]:
    """{top-level module: first file importing it} over the shipped packages."""
    found: dict[str, str] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _declared() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    return {_normal(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in reqs}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    dists = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for module, where in _imported_top_levels().items():
        if module in PACKAGES or module in sys.stdlib_module_names:
            continue
        names = dists.get(module)
        assert names, f"{module} (imported in {where}) is not installed: declare and install it"
        if not any(_normal(n) in declared for n in names):
            missing[module] = (names, where)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
