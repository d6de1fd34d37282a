"""Architecture rules for src/hypercore, read from the source with `ast` (nothing is imported or run).

1. No import cycle among hypercore modules.
2. Only hypercore.api itself, hypercore.agent (which wires the app together)
   and hypercore.cli (through hypercore.api.client) import from hypercore.api.
3. No file is longer than 400 lines.

How imports are read:
- every `import` and `from ... import` counts, at module level or inside a
  function or class, except those under `if TYPE_CHECKING:` (never run);
- a package's __init__.py is the module named after the package;
- `from hypercore.pkg import name` imports hypercore.pkg and, when `name` is a
  submodule, hypercore.pkg.name as well; relative imports are resolved the same way;
- `import hypercore.pkg.mod` imports hypercore.pkg.mod. The parent packages
  Python also runs on the way are not counted: every module would then depend
  on its own package's __init__, and any package that re-exports its modules
  would be a cycle by construction;
- imports of names that are not hypercore modules (a module removed
  mid-refactor, say) are ignored: they cannot take part in a cycle.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT_PACKAGE = "hypercore"
MAX_LINES = 400
API = "hypercore.api"
# Outside hypercore.api, who may import what from it ("*": anything).
API_IMPORTERS: dict[str, frozenset[str] | str] = {
    "hypercore.agent": "*",
    "hypercore.cli": frozenset({"hypercore.api.client"}),
}


@dataclass(frozen=True)
class SourceModule:
    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def source_files() -> tuple[Path, ...]:
    return tuple(sorted((SRC / ROOT_PACKAGE).rglob("*.py")))


@cache
def modules() -> dict[str, SourceModule]:
    found: dict[str, SourceModule] = {}
    for path in source_files():
        module = SourceModule(module_name(path), path)
        # pkg/__init__.py and pkg.py both present: Python imports the package.
        if module.name not in found or module.is_package:
            found[module.name] = module
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, at any depth, except under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the `else:` of such an `if` does run
        else:
            stack.extend(ast.iter_child_nodes(node))


def _from_base(module: SourceModule, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` names (X, with leading dots resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: SourceModule, known: Collection[str]) -> set[str]:
    """The modules among ``known`` that ``module`` imports (itself excluded)."""
    tree = ast.parse(module.path.read_text(), filename=str(module.path))
    targets: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = _from_base(module, node)
        targets.add(base)
        targets.update(f"{base}.{alias.name}" for alias in node.names)  # kept only when a submodule
    return {t for t in targets if t in known and t != module.name}


@cache
def import_graph() -> dict[str, frozenset[str]]:
    known = modules()
    return {name: frozenset(imports_of(module, known)) for name, module in sorted(known.items())}


def strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the graph's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def shortest_cycle_through(start: str, graph: dict[str, frozenset[str]], within: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected component (BFS)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & within):
            if child == start:  # back at the start: walk the parents home
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle inside {sorted(within)}")


def import_cycles() -> list[str]:
    """One readable chain per distinct shortest cycle: a shortest cycle through
    each module of each cyclic component, without repeats."""
    graph = import_graph()
    chains: list[str] = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        members = set(component)
        seen: set[tuple[str, ...]] = set()
        for start in component:
            cycle = shortest_cycle_through(start, graph, members)
            ring = cycle[:-1]
            first = ring.index(min(ring))
            canonical = tuple(ring[first:] + ring[:first])  # one rotation per cycle
            if canonical not in seen:
                seen.add(canonical)
                chains.append(" -> ".join([*canonical, canonical[0]]))
    return chains


def _in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def api_boundary_offenders() -> list[str]:
    offenders: list[str] = []
    for name, targets in import_graph().items():
        if _in_package(name, API):
            continue
        allowed = next((rule for owner, rule in API_IMPORTERS.items() if _in_package(name, owner)), frozenset())
        if allowed == "*":
            continue
        bad = sorted(t for t in targets if _in_package(t, API) and t not in allowed)
        if bad:
            offenders.append(f"{name} imports {', '.join(bad)}")
    return offenders


def long_files() -> list[tuple[str, int]]:
    counts = ((str(p.relative_to(SRC.parent)), len(p.read_text().splitlines())) for p in source_files())
    return sorted(((path, n) for path, n in counts if n > MAX_LINES), key=lambda item: -item[1])


# --------------------------------------------------------------------------- the rules


def test_no_import_cycles() -> None:
    cycles = import_cycles()
    assert not cycles, f"{len(cycles)} import cycle(s) among hypercore modules:\n  " + "\n  ".join(cycles)


def test_only_the_agent_and_the_cli_client_import_the_api() -> None:
    offenders = api_boundary_offenders()
    assert not offenders, (
        f"outside {API}, only hypercore.agent (anything) and hypercore.cli ({API}.client) may import it:\n  "
        + "\n  ".join(offenders)
    )


def test_no_source_file_over_400_lines() -> None:
    offenders = long_files()
    assert not offenders, f"files over {MAX_LINES} lines:\n  " + "\n  ".join(f"{p}: {n}" for p, n in offenders)


# --------------------------------------------------------------------------- the reader itself


def _module(tmp: Path, rel: str, text: str) -> SourceModule:
    path = tmp / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return SourceModule(rel.removesuffix(".py").removesuffix("/__init__").replace("/", "."), path)


def test_the_reader_sees_what_the_rules_promise(tmp_path: Path) -> None:
    # A made-up package: if the reader missed or invented an edge, the rules above would be vacuous or wrong.
    fake = {
        "hypercore": "",
        "hypercore.pkg": "from . import sub\n",
        "hypercore.pkg.sub": "def f():\n    from hypercore.pkg import other\n",
        "hypercore.pkg.other": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import hypercore.top\nelse:\n    from ..top import thing\n"
        ),
        "hypercore.top": "import hypercore.pkg.sub\nfrom hypercore.missing import x\n",
    }
    built = {}
    for name, text in fake.items():
        is_package = name in {"hypercore", "hypercore.pkg"}
        rel = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
        built[name] = _module(tmp_path, rel, text)
    graph = {name: frozenset(imports_of(m, built)) for name, m in built.items()}
    assert graph == {
        "hypercore": frozenset(),
        "hypercore.pkg": {"hypercore.pkg.sub"},
        "hypercore.pkg.sub": {"hypercore.pkg", "hypercore.pkg.other"},  # inside a function still counts
        "hypercore.pkg.other": {"hypercore.top"},  # the TYPE_CHECKING branch does not; its else does
        "hypercore.top": {"hypercore.pkg.sub"},
    }
    cyclic = [c for c in strongly_connected(graph) if len(c) > 1]
    assert cyclic == [["hypercore.pkg", "hypercore.pkg.other", "hypercore.pkg.sub", "hypercore.top"]]
    members = set(cyclic[0])
    assert shortest_cycle_through("hypercore.pkg", graph, members) == ["hypercore.pkg", "hypercore.pkg.sub", "hypercore.pkg"]
    assert shortest_cycle_through("hypercore.top", graph, members) == [
        "hypercore.top", "hypercore.pkg.sub", "hypercore.pkg.other", "hypercore.top"
    ]
