"""The package's layers import downwards only, lazy imports (inside functions) included, and no
module imports itself back through others. Read from the source with ``ast``, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_muon"

#: Layer of each top-level part of the package; a module may import its own layer or lower ones.
LAYERS = {
    "core": 0,
    "engine": 1,
    "distributed": 2,
    "optim": 3,
    "data": 3,
    "diagnostics": 3,
    "lightning": 4,
    "callbacks": 4,
    "litgpt": 4,
    "cli": 4,
    "__init__": 4,
    "benchmarks": 5,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, source: str | None = None) -> set[str]:
    """Every ``lightning_muon`` module ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lightning_muon"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lightning_muon":
                continue
            modules = {f"{target}.{a.name}" for a in node.names}
            found |= {m for m in modules if _exists(m)} or {target}
            if not all(_exists(m) for m in modules):
                found.add(target)
    return {m for m in found if m != name}


def _exists(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else "__init__"
    return part, LAYERS[part]


GRAPH = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_part_of_the_package_has_a_layer() -> None:
    assert {_layer(m)[0] for m in GRAPH} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_downwards_only(module: str) -> None:
    part, layer = _layer(module)
    upward = sorted(t for t in GRAPH[module] if _layer(t)[1] > layer)
    assert not upward, f"{module} (layer {part}) imports upward: {upward}"


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target] if target in path else [module, target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_the_engine_imports_only_core_and_itself() -> None:
    for module, targets in GRAPH.items():
        if _layer(module)[0] == "engine":
            assert {_layer(t)[0] for t in targets} <= {"core", "engine"}, (module, targets)


def test_the_walker_sees_lazy_imports() -> None:
    """The oracle can fail: the function-level import that once tied the layers together is found."""
    source = "def engine(self):\n    from ..distributed.engine import engine_for\n    return engine_for(self)\n"
    path = PACKAGE / "optim" / "base.py"
    assert _imports(path, source) == {"lightning_muon.distributed.engine"}
    upward = "def f():\n    from ..optim.base import NS_DTYPES\n"
    targets = _imports(PACKAGE / "distributed" / "engine.py", upward)
    assert targets == {"lightning_muon.optim.base"} and _layer("lightning_muon.optim.base")[1] > 2
