"""The package's shape: no function longer than about a screen (issue 13)."""

import ast
import re
from pathlib import Path

import pixgen

PACKAGE = Path(pixgen.__file__).parent
MAX_LINES = 60
SKIP: set[str] = set()  # every module keeps the limit, the shapes training script included


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() in SKIP:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its file (inside functions too: an
    import moved into a function to dodge a circle is the circle still)."""
    mods = _modules()

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                found = known(target) if target.startswith("pixgen") else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_circles():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


DRAWER_NAMES = r"(vqgan|pixel|fft|lines)"
BRANCH = re.compile(  # a comparison of the drawer setting, or with a drawer's name
    rf"""\bdrawer\s*(==|!=|\bin\b)|(==|!=)\s*["']{DRAWER_NAMES}["']|["']{DRAWER_NAMES}["']\s*(==|!=)"""
)


def test_no_code_outside_the_drawers_branches_on_a_drawer_name():
    """Callers ask the drawer what it can do (its declared capabilities), never which it is."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("drawers/", "shapes/")):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if BRANCH.search(line.split("#")[0]):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, found


def test_the_drawer_name_finder_finds_a_branch():
    assert BRANCH.search('if s.drawer == "vqgan":') and BRANCH.search("if name != 'pixel':")
    assert not BRANCH.search('return self.name == "plateau"')


def test_the_command_line_files_stay_short():
    long = [p.name for p in (PACKAGE / "cli").glob("*.py") if len(p.read_text().splitlines()) > 300]
    assert not long, long
