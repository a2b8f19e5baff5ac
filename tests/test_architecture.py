"""The house rules that keep the code navigable, checked on the source itself.

Arrows only point down (ui -> app -> p2p -> core), there is no import circle (lazy imports inside
functions included), nothing imports the folders by their bare names, and app/ keeps its modules in
rooms (sub-packages) but for the command-line entry and a few shared helpers.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"core": 0, "p2p": 1, "app": 2, "ui": 3}
APP_TOP_LEVEL = {"__init__.py", "__main__.py", "cli.py", "errors.py", "paths.py", "settings.py", "trio_run.py"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["corolla", *parts])


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, lazy ones included; relative imports resolved."""
    found = []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def sources() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def graph() -> dict[str, set[str]]:
    modules = sources()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for _, target in imports_of(path):
            if target in modules and target != name:
                edges[name].add(target)
    return edges


def test_arrows_point_down_and_no_bare_names():
    wrong = []
    for name, path in sources().items():
        layer = name.split(".")[1]
        for line, target in imports_of(path):
            head = target.split(".")[0]
            if head in LAYERS:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} by its bare name")
            elif head == "corolla" and target.count(".") >= 1:
                to = target.split(".")[1]
                if to in LAYERS and LAYERS[to] > LAYERS[layer]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {target}, a layer above it")
    assert wrong == []


def test_no_import_circles():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    # A package's __init__ importing its own modules is not a circle of meaning; there are none now.
    assert circles == []


def test_app_keeps_its_modules_in_rooms():
    loose = sorted(p.name for p in (ROOT / "app").glob("*.py") if p.name not in APP_TOP_LEVEL)
    assert loose == []
    for module in ("cli.py", "errors.py", "paths.py", "trio_run.py"):
        assert len((ROOT / "app" / module).read_text().splitlines()) < 120, module


def test_no_module_over_400_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in sources().values()
            if (n := len(p.read_text().splitlines())) > 400]
    assert long == []


def test_app_and_below_do_not_use_qt():
    qt = [f"{p.relative_to(ROOT)}:{line}" for name, p in sources().items() if name.split(".")[1] != "ui"
          for line, target in imports_of(p) if target.startswith("PySide6")]
    assert qt == []


def test_one_decoding_loop():
    """The loop that feeds each sampled token back through the blocks is written once."""
    loops = [f"{p.relative_to(ROOT)}:{line}" for p in sources().values()
             for line, text in enumerate(p.read_text().splitlines(), 1)
             if "while hidden is not None" in text]
    assert len(loops) == 1 and loops[0].startswith("core/generation.py:"), loops
