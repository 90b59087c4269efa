"""The code's shape, as DEVELOPERS.md asks it: one screen per function (60 lines at most), and modules of about
400 lines at most unless their docstring says why (a paragraph starting "Why this module is long:")."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "implementations")
FUNCTION_LINES = 60
MODULE_LINES = 420
LONG_MODULE_REASON = "Why this module is long:"


def _modules():
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(root)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > FUNCTION_LINES]


def test_no_function_is_longer_than_a_screen():
    long_functions = [entry for path in _modules() for entry in _long_functions(path)]
    assert long_functions == []


def test_a_long_module_says_why_in_its_docstring():
    unexplained = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MODULE_LINES and LONG_MODULE_REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert unexplained == []


@pytest.mark.parametrize("source, expected", [
    ("def f():\n" + "    x = 1\n" * 60 + "    return x\n", 1),
    ("def f():\n" + "    x = 1\n" * 58 + "    return x\n", 0),
])
def test_the_function_check_counts_a_function_s_lines(tmp_path, source, expected):
    module = tmp_path / "module.py"
    module.write_text(source)
    assert len(_long_functions(module, tmp_path)) == expected
