"""The engine's modules import each other in one direction only, at module level.

Read from the source (``ast``), so a test fails on the import as written, whichever modules
happen to be loaded: no import inside a function, no cycle among ``detcli.engine`` modules
(``if TYPE_CHECKING`` imports and package ``__init__`` files count), and the layering that
keeps training and testing apart: the trainer never reaches into the tester, the tester never
imports the evaluation, and ``resolve_device`` / ``evaluate_checkpoint`` sit where both
sides can use them.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from detcli.engine.context import Hook, TrainContext
from tests.test_import_layering import find_cycle  # the one cycle finder (self-tested there)

ENGINE = Path(__file__).resolve().parents[2] / "detcli" / "engine"


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def imported(path: Path, *, module_level: bool) -> set[str]:
    """The ``detcli`` modules ``path`` imports (at module level, or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    functions = [n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    in_functions = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if (id(node) in in_functions) == module_level:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        names |= {c for c in candidates if c.startswith("detcli")}
    return names


def engine_graph() -> dict[str, set[str]]:
    """Module -> the engine modules it imports, the packages on the way included."""
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for target in imported(path, module_level=True):
            parts = target.split(".")
            deps |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        graph[name] = {d for d in deps if d in MODULES and d != name}
    return graph


def test_no_engine_module_imports_inside_a_function():
    found = {name: sorted(imported(path, module_level=False)) for name, path in MODULES.items()}
    assert {name: deps for name, deps in found.items() if deps} == {}


def test_the_engine_has_no_import_cycle():
    assert find_cycle(engine_graph()) is None


def test_training_and_testing_are_layered():
    graph = engine_graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    assert "detcli.engine.tester" not in graph["detcli.engine.trainer"]
    assert "detcli.engine.evaluation" not in reaches("detcli.engine.tester")
    assert graph["detcli.engine.device"] == set()  # any command can choose its device
    assert "detcli.engine.tester" in graph["detcli.engine.checkpoint_eval"]
    assert "detcli.engine.checkpoint_eval" not in reaches("detcli.engine.trainer")


def test_every_hook_point_receives_the_typed_context():
    points = ["before_run", "after_run", "before_epoch", "after_epoch", "before_iter",
              "after_iter", "on_log", "on_eval_progress", "on_eval"]
    for point in points:
        assert typing.get_type_hints(getattr(Hook, point))["ctx"] is TrainContext, point


def test_scoring_detections_needs_no_engine():
    """detcli.evaluation scores detections; running models (the engine) sits above it."""
    root = ENGINE.parent / "evaluation"
    for path in sorted(root.rglob("*.py")):
        engine = [t for t in imported(path, module_level=True) if t.startswith("detcli.engine")]
        assert engine == [], f"{path.name} imports {engine}"
