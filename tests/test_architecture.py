"""The package's import graph: no cycles, and no import from a lower layer to a higher one.

Every ``import`` / ``from ... import`` inside ``rstfast`` (module level and inside functions) is an
edge; ``from . import name`` points at the submodule ``name`` when there is one. The core is layered
(:data:`LAYERS`): a module may import its own layer and those below it only.
"""
import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "rstfast"

# Lowest first. Modules not listed (models, data, training, tools) sit above all of these.
LAYERS = (
    ("rstfast._checks", "rstfast.files", "rstfast.machine", "rstfast.geometry", "rstfast.flops", "rstfast.filters",
     "rstfast.reference"),
    ("rstfast.contract", "rstfast.csrc", "rstfast.fft", "rstfast.triton"),
    ("rstfast.backends",),
    ("rstfast.autotune",),
    ("rstfast.ops",),
    ("rstfast.nn", "rstfast.golden"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known) -> set:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rstfast"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("rstfast"):
                target = node.module
            else:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in known else target)
    return {target for target in found if target != "rstfast" and target != name}


def graph():
    known = modules()
    return {name: imports(name, path, known) & set(known) for name, path in known.items()}


def test_no_import_cycles():
    edges = graph()
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def rank(name: str):
    for level, members in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in members):
            return level
    return len(LAYERS)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = [f"{source} -> {target}" for source, targets in graph().items()
              for target in targets if rank(target) > rank(source)]
    assert not upward, "imports against the layering: " + ", ".join(sorted(upward))
