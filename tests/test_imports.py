"""The package's stages import one way: runs, serving -> inference -> training -> models, data ->
utils, never back up, with no import circle, and nothing in carseg imports an entry point."""

from __future__ import annotations

import ast
from pathlib import Path

from support.entry import REPO

PACKAGE = REPO / "src" / "carseg"
# a stage may import the stages below it
LAYERS = {
    "utils": 0, "data": 1, "models": 1, "training": 2, "inference": 3, "runs": 4, "serving": 4,
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    """The carseg modules ``path`` imports (at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("carseg", "train", "eval", "predict")}


def _stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_no_stage_imports_a_stage_above_it():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        stage = path.relative_to(PACKAGE).parts[0]
        if stage not in LAYERS:
            continue
        for module in _imports(path):
            assert module.startswith("carseg"), f"{path}: imports the entry point {module}"
            other = _stage(module)
            if other in LAYERS and LAYERS[other] > LAYERS[stage]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
            if stage in ("data", "models") and other in ("data", "models") and other != stage:
                upward.append(f"{path.relative_to(PACKAGE)} imports {module} (a sibling stage)")
    assert not upward, "\n".join(upward)


def test_no_module_import_circle():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("carseg", *path.relative_to(PACKAGE).with_suffix("").parts))
        name = name.removesuffix(".__init__")
        graph[name] = {m for m in _imports(path) if m != name}
    seen, stack, circles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            circles.append(" -> ".join([*stack[stack.index(node) :], node]))
            return
        if node in seen or node not in graph:
            return
        stack.append(node)
        for other in sorted(graph[node]):
            visit(other)
        stack.pop()
        seen.add(node)

    for node in sorted(graph):
        visit(node)
    assert not circles, "\n".join(circles)
