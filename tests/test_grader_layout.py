"""The exercises subpackage: each module says what it holds, and no module imports another that imports it
back (function-level imports included; the package's __init__, which only re-exports, aside)."""

import ast
from pathlib import Path

import scratchnst

FOLDER = Path(scratchnst.__file__).resolve().parent / "exercises"


def imports_of(path):
    """The scratchnst.exercises modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            # never `from scratchnst.exercises import name`: that goes through the package's __init__,
            # which imports the modules (a cycle to a checker that follows packages)
            assert node.module != "scratchnst.exercises", f"{path.name}: from scratchnst.exercises import ..."
            if node.module.startswith("scratchnst.exercises."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("scratchnst.exercises.")}
    return found


def test_no_module_of_the_subpackage_imports_one_that_imports_it_back():
    modules = {p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__"}
    graph = {m: imports_of(FOLDER / f"{m}.py") & modules for m in modules}
    assert "__init__" not in set().union(*graph.values())  # nothing reaches back into the re-exports

    def visit(module, path):
        assert module not in path, " -> ".join(path + [module])
        for other in graph[module]:
            visit(other, path + [module])

    for module in modules:
        visit(module, [])


def test_the_worker_needs_only_the_standard_library_and_numpy():
    """It runs in the sandbox, where nothing else is: not even scratchnst (there, the student's)."""
    tree = ast.parse((FOLDER / "worker.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "scratchnst" not in names and "pickle" not in names
    import sys

    assert names - {"numpy"} <= set(sys.stdlib_module_names)


def test_no_module_of_the_grader_unpickles():
    for path in FOLDER.glob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, path.name
