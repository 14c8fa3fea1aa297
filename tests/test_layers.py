"""The house's layering (docs/architecture.md), checked from the sources' own imports.

Every ``import`` of a heron module counts, the ones inside functions and under
``TYPE_CHECKING`` too: a lazy import is still a dependency, and a type-only one
still ties the modules together for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "heron"

#: layer of each module (by name or package prefix); a module may import only
#: modules of its own layer or below. Within a layer, no module imports another
#: in a circle (checked separately).
LAYERS = [
    ("heron.errors", 0),
    ("heron.protocol", 0),  # sans-IO: imports nothing but its own package
    ("heron.accesslog", 0),
    ("heron.metrics", 0),
    ("heron.tls", 1),
    ("heron.config", 2),
    ("heron.asgi", 3),
    ("heron.transport", 4),
    ("heron.logs", 5),
    ("heron.sources", 5),
    ("heron.importer", 5),
    ("heron.demo", 5),
    ("heron.systemd", 5),
    ("heron.reloader", 5),
    ("heron.settings_docs", 5),
    ("heron.server", 6),
    ("heron.quic_steering", 7),  # the supervisor's UDP sockets for --quic-bind, and the kernel program that steers them
    ("heron.worker", 7),  # a --workers process (the supervisor imports it, never the reverse)
    ("heron.supervisor", 7),
    ("heron.cli", 8),
    ("heron.__main__", 8),
]


def _layer(module: str) -> int:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"{module} has no layer in tests/test_layers.py (and docs/architecture.md)")


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = ("heron", *path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            targets = [f"{name}.{alias.name}" for alias in node.names if f"{name}.{alias.name}" in known] or [name]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        # the package itself gives only __version__ (its __init__ imports lazily)
        deps.update(t for t in targets if t in known and t not in (module, "heron"))
    return deps


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items() if name != "heron"}


def test_every_import_points_down_or_sideways() -> None:
    wrong = [
        f"{module} (layer {_layer(module)}) imports {dep} (layer {_layer(dep)})"
        for module, deps in _graph().items()
        for dep in sorted(deps)
        if _layer(dep) > _layer(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle() -> None:
    graph = _graph()
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                circles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_protocol_cores_import_nothing_but_themselves() -> None:
    graph = _graph()
    outside = {
        module: sorted(dep for dep in deps if not dep.startswith("heron.protocol"))
        for module, deps in graph.items()
        if module.startswith("heron.protocol")
    }
    assert not any(outside.values()), outside
