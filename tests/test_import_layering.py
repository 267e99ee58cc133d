"""The package's modules import each other in one direction, at module level.

Read from the source (``ast``), so a test fails on the import as written, whichever modules
happen to be loaded. Every import of a ``detcli`` module counts: at module level, under
``if TYPE_CHECKING``, inside a function, and ``importlib.import_module("detcli...")``.

- No cycle among ``detcli`` modules. Importing ``a.b.c`` runs package ``a.b`` first, so it
  depends on ``a.b``'s ``__init__`` too -- except from inside ``a.b`` itself, which Python has
  already started by then (a submodule's own packages are not a dependency it can avoid).
- No import inside a function outside ``detcli/cli/`` (the CLI imports its commands' code on
  use, so ``det --help`` stays fast), except the package APIs in :data:`LAZY_PACKAGES`, which
  load their public names on first attribute access (PEP 562). Those ``__getattr__`` imports
  run only once the package has finished importing, so they are not edges of the cycle check.
- ``detcli.config.schema`` (the pydantic base every config model derives from) imports
  nothing else of the package; the registry imports it, never the other way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "detcli"

# Package -> why its public names load on first use. Nothing else may import inside a function.
LAZY_PACKAGES = {
    "detcli": "`import detcli` stays torch-free (tests/test_inference.py checks it); "
              "load_config, build_detector and Detector each need torch",
    "detcli.inference": "the CLI reads detcli.inference.defaults while building its help; "
                        "Detector and Preprocessor need torch",
    "detcli.export": "running an exported model (export.runtime) must not import the "
                     "exporter's pieces, and export.run imports inference.detector, which "
                     "imports export.runtime",
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def parse_package(root: Path = PACKAGE) -> dict[str, ast.Module]:
    return {module_name(p, root): ast.parse(p.read_text(encoding="utf-8"))
            for p in sorted(root.rglob("*.py"))}


def imports(name: str, tree: ast.Module, modules: set[str]) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every package import of module ``name``,
    each with the packages on its way (not ``name``'s own packages, already being imported)."""
    functions = [n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    in_functions = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from a import b`: module a.b when b is one, else a's attribute b
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                       else node.module for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args):
            arg = node.args[0]
            text = (arg.value if isinstance(arg, ast.Constant) else
                    arg.values[0].value if isinstance(arg, ast.JoinedStr) and arg.values
                    and isinstance(arg.values[0], ast.Constant) else "")
            prefix = str(text).rstrip(".")
            # an f-string names some module under its constant prefix: count them all
            targets = [m for m in modules if m == prefix or m.startswith(prefix + ".")] \
                if prefix.startswith("detcli") else []
        else:
            continue
        for target in targets:
            if target not in modules and target.rsplit(".", 1)[0] in modules:
                target = target.rsplit(".", 1)[0]
            if target not in modules:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep != target and name.startswith(dep + "."):
                    continue  # one of name's own packages, already being imported
                if dep != name:
                    found.append((dep, id(node) in in_functions))
    return found


def import_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> the modules it imports, anywhere in it, but the lazy packages' ``__getattr__``."""
    modules = set(trees)
    return {name: {dep for dep, in_function in imports(name, tree, modules)
                   if not (in_function and name in LAZY_PACKAGES)}
            for name, tree in trees.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


TREES = parse_package()


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_a_planted_cycle_through_a_package_and_a_function_is_found(tmp_path):
    """Files written out: ``p.low`` imports ``p.pkg.x`` inside a function; ``p.pkg``'s
    ``__init__`` imports ``p.pkg.x``, which imports ``p.low`` -- a cycle the function-level
    import hides at runtime. ``p.pkg.x`` importing its sibling ``p.pkg.y`` is not one."""
    files = {
        "p/__init__.py": "",
        "p/low.py": "def f():\n    from p.pkg.x import X\n    return X\n",
        "p/pkg/__init__.py": "from p.pkg.x import X\n",
        "p/pkg/x.py": "from p.pkg.y import Y\nimport p.low\nX = Y\n",
        "p/pkg/y.py": "Y = 1\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    trees = parse_package(tmp_path / "p")
    graph = import_graph(trees)
    assert graph["p.pkg.x"] == {"p.pkg.y", "p.low"}  # not its own package p.pkg
    assert graph["p.low"] == {"p.pkg", "p.pkg.x"}
    assert find_cycle(graph) == ["p.low", "p.pkg", "p.pkg.x", "p.low"]
    (tmp_path / "p/low.py").write_text("X = 2\n")
    assert find_cycle(import_graph(parse_package(tmp_path / "p"))) is None


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph(TREES)) is None


def test_no_function_level_import_outside_the_cli():
    modules = set(TREES)
    found = {name: sorted({dep for dep, in_function in imports(name, tree, modules) if in_function})
             for name, tree in TREES.items()
             if not name.startswith("detcli.cli.") and name not in LAZY_PACKAGES}
    assert {name: deps for name, deps in found.items() if deps} == {}


def test_the_lazy_packages_import_nothing_else_inside_functions():
    """The allow-list is exact: each lazy package exists and does load names on first use."""
    modules = set(TREES)
    for name in LAZY_PACKAGES:
        assert any(in_function for _, in_function in imports(name, TREES[name], modules)), name


def test_schema_imports_nothing_of_the_package_and_the_registry_imports_it():
    graph = import_graph(TREES)
    assert graph["detcli.config.schema"] == set()
    assert graph["detcli.config"] == {"detcli.config.schema"}  # a component importing Schema
    assert "detcli.config.schema" in graph["detcli.registry"]


def test_the_root_config_is_assembled_above_the_components():
    graph = import_graph(TREES)

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    assert "detcli.components" in graph["detcli.config.root"]
    assert "detcli.config.root" in graph["detcli.config.loader"]
    for component in ("detcli.models", "detcli.task", "detcli.structures", "detcli.data.transforms",
                      "detcli.data.datasets", "detcli.data.loader", "detcli.engine.config",
                      "detcli.engine.hooks", "detcli.registry"):
        assert "detcli.config.loader" not in reaches(component), component
