"""Every repository path the README and docs/ name exists, so "where is X?" never leads a reader
to a file that was renamed or never written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("features", "streams", "serving", "tessera", "bench", "docs", "examples", "deploy",
       "tests", ".ci")
_CODE = re.compile(r"`([^`\s]+)`")
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _named_paths(text: str) -> set[str]:
    found = set()
    for token in _CODE.findall(text) + _LINK.findall(text):
        token = token.split("::")[0].rstrip(".,:;")
        if token.split("/")[0] in TOP and "/" in token and not set("*<>") & set(token):
            found.add(token)
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_path_exists(doc):
    base = ROOT if doc.name == "README.md" else doc.parent
    missing = sorted(p for p in _named_paths(doc.read_text())
                     if not (ROOT / p).exists() and not (base / p).exists())
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"
