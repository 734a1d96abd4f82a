"""The exercises subpackage's own rules: the sandboxed worker needs nothing but the standard library and
NumPy, and nothing of the grader unpickles. (No import cycle, here or anywhere in the package: see
test_package_layout.py.)"""

import ast
import sys
from pathlib import Path

import scratchnst

FOLDER = Path(scratchnst.__file__).resolve().parent / "exercises"


def test_the_worker_needs_only_the_standard_library_and_numpy():
    """It runs in the sandbox, where nothing else is: not even scratchnst (there, the student's)."""
    tree = ast.parse((FOLDER / "worker.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "scratchnst" not in names and "pickle" not in names
    assert names - {"numpy"} <= set(sys.stdlib_module_names)


def test_no_module_of_the_grader_unpickles():
    for path in FOLDER.glob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, path.name
