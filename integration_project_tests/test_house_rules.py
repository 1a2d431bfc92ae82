"""House rules a reviewer would otherwise have to remember: only Dagster's public API, nothing
that points outside the repository, and code in pieces a newcomer can read.

These read the repository's files (``git ls-files``); they start nothing.
"""

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()

#: The issue's bar: no production function longer than about 60 lines, no class over about 250.
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 250

PRIVATE_DAGSTER = re.compile(r"\bdagster\._")


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--", *patterns],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def production_python() -> list[Path]:
    """The package, the dev command, the bench, scripts and examples: everything but tests."""
    files = tracked("*.py")
    return [p for p in files if "integration_project_tests" not in p.relative_to(ROOT).parts]


@pytest.fixture(scope="module")
def git_available() -> None:
    try:
        subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the house rules read `git ls-files`")


def test_no_private_dagster_module_is_imported_anywhere(git_available: None) -> None:
    """``dagster._…`` is Dagster's internals: it changes in any release without notice. Found
    by import (``import dagster._x``, ``from dagster._x import``) and by text, in every tracked
    file but this one (pyproject's warning filters and the docs included)."""
    offenders = []
    for path in tracked("*.py", "*.toml", "*.yaml", "*.yml", "*.md", "*.cfg"):
        if path == THIS:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if PRIVATE_DAGSTER.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
        if path.suffix == ".py":
            for node in ast.walk(ast.parse(text)):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                for name in names:
                    if name.startswith("dagster._"):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not offenders, "private Dagster API:\n" + "\n".join(offenders)


def test_nothing_points_outside_the_repository(git_available: None) -> None:
    """Code and docs stand alone: no team notes kept beside the checkout (a design file, the
    shared folder) and no absolute paths of the machine that wrote them: what a reader needs is
    in docs/ and reference/."""
    # Spelt in pieces so that this test, which looks for them, is not itself a citation.
    notes = ["DESIGN" + ".md", ".." + "/shared", "/" + "work/"]
    outside = re.compile("|".join(re.escape(name) for name in notes))
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in tracked("*.py", "*.toml", "*.md", "*.yaml", "*.yml", "*.cfg", ".ci/*")
        if path != THIS
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if outside.search(line)
    ]
    assert not offenders, offenders


def long_definitions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            limit = MAX_CLASS_LINES
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            limit = MAX_FUNCTION_LINES
        else:
            continue
        length = node.end_lineno - node.lineno + 1
        if length > limit:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    return found


def test_production_code_comes_in_readable_pieces(git_available: None) -> None:
    """A function a reader can hold in their head (≤ 60 lines, nested functions counted in their
    outer one) and classes of one concern (≤ 250 lines)."""
    offenders = [line for path in production_python() for line in long_definitions(path)]
    assert not offenders, "\n".join(offenders)


def layout_entries() -> list[str]:
    """The paths the README's Layout section lists: top-level entries at column 0, entries of a
    folder at column 2 under it; deeper-indented lines continue a description."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("\n## Layout", 1)[1].split("```", 2)[1]
    entries, folder = [], ""
    for line in block.splitlines()[1:]:
        if not line.strip() or line.startswith("    "):
            continue
        name = line.split()[0]
        if line.startswith("  "):
            entries.append(folder + name)
        else:
            folder = name if name.endswith("/") else ""
            entries.append(name)
    return entries


def test_the_readme_layout_matches_the_tree(git_available: None) -> None:
    """Every path the Layout section names exists, and every module, package and top-level
    folder of the repository is named there (``<route>`` stands for any one folder)."""
    entries = layout_entries()
    missing = [e for e in entries if not list(ROOT.glob(re.sub(r"<[^>]+>", "*", e).rstrip("/")))]
    assert not missing, f"README Layout names paths that do not exist: {missing}"
    named = {e.rstrip("/") for e in entries}
    files = [p.relative_to(ROOT) for p in tracked("*")]
    wanted = {str(p.parts[0]) for p in files if len(p.parts) > 1 and not p.parts[0].startswith(".")}
    wanted |= {
        str(Path(*p.parts[:2]))
        for p in files
        if p.parts[0] == "integration_project"
        and len(p.parts) > 2 - (p.suffix == ".py")
        and p.name != "__init__.py"
        and p.parts[1] not in ("__init__.py", "py.typed")
    }
    covered = {w for w in wanted if any(n == w or n.startswith(w + "/") for n in named)}
    assert wanted == covered, f"not in README Layout: {sorted(wanted - covered)}"
