"""The codebase's shape, checked from the source text: no import cycle, ``tuner.models`` independent of
``tuner.pretrain``, no module in ``tuner/`` over 300 lines, a docstring on every public name of
``tuner/`` and ``analysis/``, no variable named like a project package.

Everything is read with ``ast``; nothing of the project is imported, so a cycle that would only break
at run time (an import inside a function) is found before it breaks.

**The import graph.** Nodes are the modules of the project's packages (``tuner``, ``analysis``,
``search_spaces``); a package is the node of its ``__init__.py``. A module ``M`` has an edge to ``T``
for every import of ``T`` anywhere in ``M``: at module level, inside functions and classes, and
through ``importlib.import_module("literal")`` / ``import_module("literal")`` / ``__import__``. So:

- ``import a.b.c`` and ``from a.b.c import name`` import ``a.b.c``;
- ``from a.b import c`` imports the submodule ``a.b.c`` when ``a/b/c.py`` (or ``a/b/c/``) exists,
  else the name ``c`` of ``a.b``'s ``__init__``, i.e. ``a.b``;
- relative imports are resolved against ``M``'s package;
- a string constant that is exactly a project module's dotted name (``"analysis.delong"``, as a lazy
  ``__getattr__`` table holds them) is an import of that module: code that turns module names into
  imports is an import all the same. Docstrings are not code and are skipped;
- imports under ``if TYPE_CHECKING:`` are left out: they never run;
- a module name built at run time (``import_module(f"search_spaces.{name}")``) cannot be read from the
  source and is not an edge (``search_spaces.get_space`` is the one such loader: its plug-ins import
  the package back, the plug-in pattern, by design).

*Packages.* Importing ``a.b.c`` first runs ``a/__init__`` and ``a/b/__init__``, so an edge to ``a.b.c``
also implies edges to ``a`` and ``a.b`` -- except to the importer's own enclosing packages: Python has
already started those before the importer runs (a submodule is always imported after its parent), so
reaching them adds no new ordering. Hence a package ``__init__`` that re-exports its submodules, whose
submodules import each other by full path, is no cycle. An *explicit* import of the parent package
itself (``from a.b import name`` inside ``a.b.x``, reading a name the ``__init__`` defines) is an edge,
and it closes a cycle exactly when that ``__init__`` imports (directly or transitively) back into
``a.b.x``: the case that fails with "cannot import name ... (most likely due to a circular import)".

**Docstrings.** Public names: module-level functions and classes whose name does not start with ``_``
(in every module, ``_private.py`` ones too: their public names are what a package re-exports), and the
methods of public classes whose name does not start with ``_`` (dunders excluded), properties
included. Exempt:

- overloads (``@typing.overload``) and property setters/deleters (the getter carries the docstring);
- an override of a method that a project base class (resolved through the imports) documents: Python
  shows the base's docstring for it (``inspect.getdoc``), and the reason lives there;
- these framework hooks, in a class derived from a class outside the project: the framework documents
  what they are for, and the class docstring says what this one does: ``FRAMEWORK_HOOKS`` below.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tuner", "analysis", "search_spaces")
DOCUMENTED_PACKAGES = ("tuner", "analysis")
MAX_LINES = 300  # physical lines of a module in tuner/

FRAMEWORK_HOOKS = {
    # torch.nn.Module
    "forward": "torch.nn.Module",
    "extra_repr": "torch.nn.Module",
    "reset_parameters": "torch.nn.Module",
    # ray.tune.Callback
    "setup": "ray.tune.Callback",
    "on_step_begin": "ray.tune.Callback",
    "on_step_end": "ray.tune.Callback",
    "on_trial_start": "ray.tune.Callback",
    "on_trial_restore": "ray.tune.Callback",
    "on_trial_save": "ray.tune.Callback",
    "on_trial_result": "ray.tune.Callback",
    "on_trial_complete": "ray.tune.Callback",
    "on_trial_recover": "ray.tune.Callback",
    "on_trial_error": "ray.tune.Callback",
    "on_checkpoint": "ray.tune.Callback",
    "on_experiment_end": "ray.tune.Callback",
    # logging.Handler
    "emit": "logging.Handler",
}


# --------------------------------------------------------------------------------------------
# modules


def discover(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of the packages under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def is_package(path: Path) -> bool:
    """Whether a module is a package (its node is the ``__init__.py``)."""
    return path.name == "__init__.py"


def ancestors(module: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: the packages Python runs before the module."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (of the module, a class or a function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    found.add(id(body[0].value))
    return found


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of every node under an ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) block."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for child in node.body:
                    found.update(id(n) for n in ast.walk(child))
    return found


# --------------------------------------------------------------------------------------------
# the import graph


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` needs ``target`` loaded, because of the statement at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int
    how: str  # the statement, for the message
    implied: bool = False  # target is a package Python runs first, not the module the statement names

    def __str__(self) -> str:
        package = " (a package that import runs first)" if self.implied else ""
        where = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path.name
        return f"{self.source} -> {self.target}{package}  [{where}:{self.line}: {self.how}]"


@dataclass
class Graph:
    """The project's modules and their imports (see the module docstring for what counts)."""

    modules: dict[str, Path]
    edges: dict[str, list[Edge]] = field(default_factory=dict)

    def add(self, source: str, target: str, path: Path, line: int, how: str, *, explicit: bool) -> None:
        """``source`` imports ``target``: the edge, and those to ``target``'s packages that
        ``source`` does not sit in. ``explicit``: ``target`` itself was named (not only a package
        implied by it), so it counts even when it is ``source``'s own package."""
        own = set(ancestors(source))
        targets = [(a, True) for a in ancestors(target) if a not in own]
        if explicit or target not in own:
            targets.append((target, False))
        edges = self.edges.setdefault(source, [])
        for t, implied in targets:
            if t != source and t in self.modules and all(e.target != t for e in edges):
                edges.append(Edge(source, t, path, line, how, implied))

    def successors(self, module: str) -> list[str]:
        """The modules ``module`` imports directly."""
        return [e.target for e in self.edges.get(module, [])]

    def edge(self, source: str, target: str) -> Edge:
        """The first recorded import of ``target`` by ``source``."""
        return next(e for e in self.edges[source] if e.target == target)


def resolve_relative(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, name] if name else base)


def build_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """Every import edge between the modules of ``packages`` under ``root``."""
    graph = Graph(discover(root, packages))
    for module, path in graph.modules.items():
        for target, line, how, explicit in imports_of(module, path, graph.modules):
            graph.add(module, target, path, line, how, explicit=explicit)
    return graph


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int, str, bool]]:
    """(imported project module, line, statement, explicitly named) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = type_checking_nodes(tree)
    docstrings = docstring_nodes(tree)
    pkg = is_package(path)

    def project(name: str) -> str | None:
        """The deepest project module that ``name`` (a dotted name) names or lies inside."""
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            candidate = ".".join(parts[:i])
            if candidate in modules:
                return candidate
        return None

    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = project(alias.name)
                if target:
                    yield target, node.lineno, f"import {alias.name}", True
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(module, pkg, node.level, node.module) if node.level else node.module or ""
            text = f"from {'.' * node.level}{node.module or ''} import"
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    yield submodule, node.lineno, f"{text} {alias.name}", True
                else:
                    target = project(base)
                    if target:
                        yield target, node.lineno, f"{text} {alias.name}", True
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    wanted = first.value
                    if wanted.startswith("."):
                        anchor = next((k.value for k in node.keywords if k.arg == "package"), None)
                        if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                            anchor = node.args[1].value
                        level = len(wanted) - len(wanted.lstrip("."))
                        wanted = resolve_relative(f"{anchor}.x", False, level, wanted.lstrip(".") or None)
                    target = project(wanted)
                    if target:
                        yield target, node.lineno, f"{name}({first.value!r})", True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in modules and node.value != module:
                yield node.value, node.lineno, f"the module name {node.value!r} in a string", True


def find_cycles(graph: Graph) -> list[list[str]]:
    """One shortest cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.successors(node):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return [shortest_cycle(graph, component) for component in sorted(components)]


def shortest_cycle(graph: Graph, component: list[str]) -> list[str]:
    """The shortest closed path through the component's first module, staying inside it."""
    inside = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in graph.successors(node):
            if nxt not in inside:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start} in {component}")  # Tarjan said there is one


def describe_cycle(graph: Graph, cycle: list[str]) -> str:
    """A cycle as its import statements, one per line."""
    lines = [f"cycle {' -> '.join(cycle)}:"]
    lines += [f"    {graph.edge(a, b)}" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "\n".join(lines)


def reachable(graph: Graph, starts: list[str]) -> dict[str, str | None]:
    """Every module the ``starts`` load, directly or transitively, each with the module that first
    imports it (breadth first, so along a shortest chain; None for the starts)."""
    parent: dict[str, str | None] = dict.fromkeys(starts)
    queue = deque(starts)
    while queue:
        node = queue.popleft()
        for nxt in graph.successors(node):
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return parent


# --------------------------------------------------------------------------------------------
# public names


@dataclass
class ClassInfo:
    """A class, where it is defined, and how its module names its bases."""

    module: str
    node: ast.ClassDef


class SourceIndex:
    """Classes and ``from x import name`` bindings of every module, to resolve base classes."""

    def __init__(self, modules: dict[str, Path]) -> None:
        self.modules = modules
        self.trees = {m: ast.parse(p.read_text(), filename=str(p)) for m, p in modules.items()}
        self.bindings: dict[str, dict[str, tuple[str, str]]] = {}
        for module, tree in self.trees.items():
            names: dict[str, tuple[str, str]] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    base = (resolve_relative(module, is_package(modules[module]), node.level, node.module)
                            if node.level else node.module or "")
                    for alias in node.names:
                        names[alias.asname or alias.name] = (base, alias.name)
            self.bindings[module] = names

    def resolve(self, module: str, name: str, depth: int = 0) -> ClassInfo | None:
        """The project class that ``name`` means in ``module`` (following re-exports), else None."""
        if depth > 10 or module not in self.trees:
            return None
        for node in self.trees[module].body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return ClassInfo(module, node)
        bound = self.bindings[module].get(name)
        if bound and bound[0] in self.trees:
            return self.resolve(bound[0], bound[1], depth + 1)
        return None

    def bases(self, info: ClassInfo) -> tuple[list[ClassInfo], bool]:
        """The class's project bases, and whether it also has a base from outside the project."""
        found, foreign = [], False
        for base in info.node.bases:
            while isinstance(base, ast.Subscript):  # Generic[C], Registry[Head]
                base = base.value
            name = base.id if isinstance(base, ast.Name) else None
            if name == "object":
                continue
            resolved = self.resolve(info.module, name) if name else None
            if resolved is None:
                foreign = True
            else:
                found.append(resolved)
        return found, foreign

    def derives_from_framework(self, info: ClassInfo, depth: int = 0) -> bool:
        """Whether a class outside the project is among the class's ancestors."""
        project, foreign = self.bases(info)
        return foreign or (depth < 20 and any(self.derives_from_framework(b, depth + 1) for b in project))

    def documented_in_base(self, info: ClassInfo, method: str, depth: int = 0) -> bool:
        """Whether a project ancestor defines ``method`` with a docstring."""
        if depth > 20:
            return False
        for base in self.bases(info)[0]:
            for node in base.node.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == method:
                    if ast.get_docstring(node):
                        return True
                    break
            else:
                if self.documented_in_base(base, method, depth + 1):
                    return True
                continue
            if self.documented_in_base(base, method, depth + 1):
                return True
        return False


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of a body, looking into ``if`` / ``try`` / ``with`` blocks (not into functions)."""
    for node in body:
        if isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    yield from _top_level(child.body if isinstance(child, ast.ExceptHandler) else [child])
        else:
            yield node


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = set()
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call):
            decorator = decorator.func
        if isinstance(decorator, ast.Name):
            names.add(decorator.id)
        elif isinstance(decorator, ast.Attribute):
            names.add(decorator.attr)
    return names


def undocumented(index: SourceIndex, module: str) -> list[str]:
    """``name (line)`` of every public name in ``module`` that has no docstring."""
    missing = []

    def check_class(info: ClassInfo, prefix: str) -> None:
        framework = index.derives_from_framework(info)
        for node in _top_level(info.node.body):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                if not ast.get_docstring(node):
                    missing.append(f"{prefix}{node.name} (line {node.lineno})")
                check_class(ClassInfo(info.module, node), f"{prefix}{node.name}.")
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
                continue
            if ast.get_docstring(node):
                continue
            decorators = _decorator_names(node)
            if "overload" in decorators or decorators & {"setter", "deleter"}:
                continue
            if framework and node.name in FRAMEWORK_HOOKS:
                continue
            if index.documented_in_base(info, node.name):
                continue
            missing.append(f"{prefix}{node.name} (line {node.lineno})")

    for node in _top_level(index.trees[module].body):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if node.name.startswith("_"):
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "overload" in _decorator_names(node):
            continue
        if not ast.get_docstring(node):
            missing.append(f"{node.name} (line {node.lineno})")
        if isinstance(node, ast.ClassDef):
            check_class(ClassInfo(module, node), f"{node.name}.")
    return missing


# --------------------------------------------------------------------------------------------
# the checks on this repository


def test_no_import_cycle():
    graph = build_graph(REPO)
    assert len(graph.modules) > 40 and sum(map(len, graph.edges.values())) > 80  # it read the project
    cycles = find_cycles(graph)
    report = "\n".join(describe_cycle(graph, cycle) for cycle in cycles)
    print(report)
    assert not cycles, f"{len(cycles)} import cycle(s) among the project's modules:\n{report}"


def test_models_never_import_pretrain():
    graph = build_graph(REPO)
    models = sorted(m for m in graph.modules if m == "tuner.models" or m.startswith("tuner.models."))
    assert len(models) >= 5

    def in_pretrain(name: str) -> bool:
        return name == "tuner.pretrain" or name.startswith("tuner.pretrain.")

    parent = reachable(graph, models)
    problems, statements = [], set()
    entries = [t for t in parent if in_pretrain(t) and parent[t] and not in_pretrain(parent[t])]
    for target in sorted(entries, key=lambda t: (graph.edge(parent[t], t).implied, t)):  # named ones first
        edge = graph.edge(parent[target], target)
        if (edge.path, edge.line) in statements:
            continue  # the same statement as a way in listed before
        statements.add((edge.path, edge.line))
        chain = [target]
        while parent[chain[-1]] is not None:
            chain.append(parent[chain[-1]])
        chain.reverse()
        problems.append("\n".join([f"{chain[0]} loads {target}:"]
                                  + [f"    {graph.edge(a, b)}" for a, b in zip(chain, chain[1:], strict=False)]))
    for module in models:  # a pretrain module named in any other string (an entry point, a lazy reference)
        tree = ast.parse(graph.modules[module].read_text())
        docstrings = docstring_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if in_pretrain(node.value.split(":")[0]) and node.value not in graph.modules:
                    problems.append(f"{module} names {node.value!r} in a string (line {node.lineno})")
    report = "\n".join(problems)
    print(report)
    assert not problems, f"tuner/models reaches tuner/pretrain:\n{report}"


def test_no_module_in_tuner_over_300_lines():
    sizes = {path.relative_to(REPO): len(path.read_text().splitlines()) for path in (REPO / "tuner").rglob("*.py")}
    assert len(sizes) > 20
    over = {str(path): n for path, n in sorted(sizes.items()) if n > MAX_LINES}
    report = "\n".join(f"{path}: {n} lines" for path, n in over.items())
    print(report)
    assert not over, f"{len(over)} module(s) in tuner/ over {MAX_LINES} lines:\n{report}"


def test_every_public_name_has_a_docstring():
    modules = discover(REPO, DOCUMENTED_PACKAGES)
    index = SourceIndex(modules)
    missing = {}
    for module, path in sorted(modules.items()):
        names = undocumented(index, module)
        if names:
            missing[str(path.relative_to(REPO))] = names
    count = sum(map(len, missing.values()))
    report = "\n".join(f"{path}: {', '.join(names)}" for path, names in missing.items())
    print(report)
    assert not missing, f"{count} public name(s) without a docstring:\n{report}"


def shadowing(root: Path, packages: tuple[str, ...]) -> list[str]:
    """``path:line name`` wherever a variable, argument, function or class takes the name of one of
    the ``packages``: below it, ``tuner.x`` means the variable, not the package."""
    found = []
    for path in discover(root, packages).values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            elif isinstance(node, ast.arg):
                name = node.arg
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = node.name
            else:
                continue
            if name in packages:
                found.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    return sorted(found)


def test_no_local_name_shadows_a_package():
    found = shadowing(REPO, PACKAGES)
    report = "\n".join(found)
    print(report)
    assert not found, f"names that shadow a project package:\n{report}"


# --------------------------------------------------------------------------------------------
# the checkers themselves, on small made-up packages: each would miss nothing it must find


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_graph_finds_cycles_hidden_in_functions_importlib_and_strings(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg import b\n",  # a submodule through `from package import`
        "pkg/b.py": "import importlib\n\ndef g():\n    importlib.import_module('pkg.c')\n",
        "pkg/c.py": "LAZY = {'name': 'pkg.a'}\n",  # a module name in a string
        "pkg/d.py": '"""pkg.a is mentioned in this docstring only."""\nfrom pkg.c import LAZY\n',
        "pkg/sub/__init__.py": "",
        "pkg/sub/x.py": "from .. import d\nfrom ..c import LAZY\n",
        "other/__init__.py": "",
        "other/x.py": "from pkg import d\n",
    })
    graph = build_graph(root, ("pkg", "other"))
    assert graph.successors("pkg.sub.x") == ["pkg.d", "pkg.c"]
    assert graph.successors("other.x") == ["pkg", "pkg.d"]
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    text = describe_cycle(graph, find_cycles(graph)[0])
    assert "a.py:2: from pkg import b" in text and "import_module('pkg.c')" in text and "'pkg.a' in a string" in text


def test_graph_reexporting_init_is_no_cycle_but_importing_back_from_it_is(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg.a import f\nfrom pkg.b import g\n",
        "pkg/a.py": "from pkg.b import g\n\ndef f():\n    return g()\n",
        "pkg/b.py": "def g():\n    return 1\n",
        "pkg/sub/__init__.py": "from . import leaf\n",
        "pkg/sub/leaf.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import f\n",
    }
    assert find_cycles(build_graph(_write(tmp_path / "ok", files), ("pkg",))) == []
    files["pkg/b.py"] = "def g():\n    from pkg import f\n    return f\n"  # needs a name the __init__ defines
    cycles = find_cycles(build_graph(_write(tmp_path / "bad", files), ("pkg",)))
    assert cycles == [["pkg", "pkg.b", "pkg"]]


def test_graph_implies_foreign_packages_not_own_ones(tmp_path):
    root = _write(tmp_path, {
        "one/__init__.py": "from one.x import X\n",
        "one/x.py": "from two.y import Y\nX = Y\n",
        "two/__init__.py": "import one\n",  # two's __init__ runs before two.y: a cycle through it
        "two/y.py": "Y = 1\n",
    })
    graph = build_graph(root, ("one", "two"))
    assert set(graph.successors("one.x")) == {"two.y", "two"}
    assert find_cycles(graph) == [["one", "one.x", "two", "one"]]


IMPL = '''\
import torch
from typing import overload
from pkg import Base
class Net(torch.nn.Module):
    """n"""
    def forward(self, x):
        return x
    def train(self, mode=True):
        return self
class Impl(Base):
    """i"""
    def run(self):
        pass
    def bare(self):
        pass
    def forward(self):
        pass
    def _private(self):
        pass
    @property
    def size(self):
        return 1
    @size.setter
    def size(self, v):
        pass
class _Hidden:
    def public(self):
        pass
def helper():
    pass
@overload
def f(x: int) -> int: ...
def __getattr__(name):
    pass
'''
BASE = '''\
"""m"""
class Base:
    """b"""
    def run(self):
        """why"""
    def bare(self):
        pass
'''


def test_shadowing_check_finds_variables_arguments_and_loop_targets(tmp_path):
    root = _write(tmp_path, {"pkg/__init__.py": "", "pkg/m.py": (
        "import pkg\n\ndef f(pkg):\n    pass\n\nfor pkg in []:\n    pass\npkg_name = 1\n")})
    assert shadowing(root, ("pkg",)) == ["pkg/m.py:3 pkg", "pkg/m.py:6 pkg"]


def test_docstring_check_exempts_only_what_it_documents(tmp_path):
    root = _write(tmp_path, {"pkg/__init__.py": "from pkg.base import Base\n", "pkg/base.py": BASE,
                             "pkg/impl.py": IMPL})
    index = SourceIndex(discover(root, ("pkg",)))
    assert undocumented(index, "pkg.base") == ["Base.bare (line 6)"]
    assert undocumented(index, "pkg.impl") == [
        "Net.train (line 8)",  # nn.Module.train is no hook: an override of it must say why
        "Impl.bare (line 14)",  # the base has no docstring to inherit (Impl.run inherits one)
        "Impl.forward (line 16)",  # Impl derives from no framework class
        "Impl.size (line 21)",  # a property is a public name; its setter is not another one
        "helper (line 29)",
    ]
