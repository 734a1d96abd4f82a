"""The package's layout, read from its source: no import cycle, and a math core that imports no tool.

Every `import` statement counts, at any depth (function-level imports too): an import inside a
function still ties the two modules together, and only hides the cycle until that function runs.
"""

import ast
import sys
from pathlib import Path

import pytest

import scratchnst

PACKAGE = Path(scratchnst.__file__).resolve().parent

# The course's mathematics: layers, the fast convolution beside them, the costs, the optimisers and
# their saved states. They compute with NumPy alone, so a student can read (and a teacher can cut
# exercises from) them without meeting files, Pillow, HDF5, the command line or the grader.
MATH_MODULES = ("scratchnst.arguments", "scratchnst.layers", "scratchnst.fast_conv", "scratchnst.fast_pool",
                "scratchnst.conv_rows",
                "scratchnst.winograd", "scratchnst.tap_planes",
                "scratchnst.fire_rows", "scratchnst.lbfgs_memory",
                "scratchnst.costs", "scratchnst.optim",
                "scratchnst.optim_state", "scratchnst.transformer_layers", "scratchnst.upsample_conv")
# parallel: the splitting of a layer's work across cores; piece_processes and shared_arena: its pieces
# in helper processes, and the memory they share; awake_cores: the cores of a run kept from halting
# between its pieces; memory_pages: which pages NumPy asks for; all themselves only the standard
# library and NumPy
PARALLEL_MODULES = ("scratchnst.parallel", "scratchnst.piece_processes", "scratchnst.shared_arena",
                    "scratchnst.awake_cores", "scratchnst.memory_pages")
ALLOWED_IN_MATH = {"numpy", "scratchnst.errors", *PARALLEL_MODULES, *MATH_MODULES}


def module_files():
    """{dotted module name: path} of every module of the package, subpackages included."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name, path, modules):
    """The names every import statement of a module brings in: modules of the package resolved
    (`from scratchnst import layers` is scratchnst.layers), others as their top-level package."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name if alias.name.startswith("scratchnst") else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("scratchnst"):
                found.add(base.split(".")[0])
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return found


def project_graph():
    modules = module_files()
    return {name: {m for m in imports_of(name, path, modules) if m in modules and m != name}
            for name, path in modules.items()}


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_reader_sees_every_import_kind():
    # the check itself: a function-level import and a relative one are found
    graph = project_graph()
    assert "scratchnst.cli.gradcheck_command" in graph["scratchnst.cli.parser"], "a function-level import was missed"
    assert {"scratchnst.layers", "scratchnst.fast_conv"} <= graph["scratchnst.networks"]


def test_no_import_cycle_in_the_package():
    assert cycles(project_graph()) == []


def test_a_planted_cycle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", MATH_MODULES + PARALLEL_MODULES)
def test_math_modules_import_only_the_standard_library_numpy_and_errors(module):
    modules = module_files()
    outside = {name for name in imports_of(module, modules[module], modules)
               if name not in ALLOWED_IN_MATH and name not in sys.stdlib_module_names}
    assert outside == set(), f"{module} imports {sorted(outside)}"


def test_the_command_line_is_at_the_edge():
    """Nothing of the course imports the command line's subpackage: it imports them. (`python -m
    scratchnst` runs it, and the exercise tools, also at the edge, may call it.)"""
    graph = project_graph()
    edge = ("scratchnst.cli", "scratchnst.exercise", "scratchnst.__main__")
    inward = {name: sorted(m for m in targets if m.startswith("scratchnst.cli"))
              for name, targets in graph.items() if not name.startswith(edge)}
    assert {name: found for name, found in inward.items() if found} == {}


def test_module_map_of_the_package_matches_the_readme():
    """`scratchnst/__init__.py` and the README list the same modules, and every module is listed."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    listed_in_readme = {line.split("`")[1] for line in readme.splitlines()
                        if line.startswith("| `scratchnst/") and line.count("`") >= 2}
    docstring = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8")))
    listed_in_init = {line.split()[0] for line in docstring.splitlines()[2:] if line.startswith("    ")}
    files = {str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
             if path.name not in ("__init__.py", "__main__.py")}
    readme_files = set()
    for entry in listed_in_readme:
        readme_files |= {f for f in files if f == entry or (entry.endswith("/") and f.startswith(entry))}
    assert readme_files == files, sorted(files ^ readme_files)
    init_names = {f.removeprefix("scratchnst/").removesuffix(".py").replace("/", ".") for f in files}
    covered = {n for n in init_names if n in listed_in_init or n.split(".")[0] + "/" in listed_in_init}
    assert covered == init_names, sorted(init_names - covered)
