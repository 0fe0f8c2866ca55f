"""The dependency graph of the project's own modules, read from the source with ``ast`` (nothing is
imported): no circles, no import from a lower layer to a higher one (presto_core < train.infra <
train's shared folders < commands), no command importing another command, the app never
importing train, and no import of a project module hidden inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("presto_core", "train", "app")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return files + [ROOT / "app.py"]


def resolve(mod: str, node: ast.ImportFrom | ast.Import, names: set[str]) -> list[str]:
    """Project modules named by one import statement of module ``mod``."""
    out = []
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = mod.split(".")[: -node.level] if not (ROOT / Path(*mod.split("."))).is_dir() else mod.split(".")
            base = ".".join(pkg + ([base] if base else []))
        # ``from pkg import sub`` names a module when pkg.sub is one.
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
    for t in targets:
        while t and t not in names:
            t = t.rpartition(".")[0]
        if t and t.split(".")[0] in PACKAGES + ("app",):
            out.append(t)
    return out


def graph() -> tuple[dict[str, set[str]], dict[str, list[str]], set[str]]:
    """(module -> imported project modules, module -> imports made inside functions, commands)."""
    files = project_files()
    names = {module_name(p) for p in files}
    edges: dict[str, set[str]] = {}
    nested: dict[str, list[str]] = {}
    commands = set()
    for path in files:
        mod = module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        edges[mod] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[mod].update(t for t in resolve(mod, node, names) if t != mod)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)) and resolve(mod, inner, names):
                        nested.setdefault(mod, []).append(f"line {inner.lineno}")
            if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                    and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
                commands.add(mod)
    return edges, nested, commands


def layer(mod: str, commands: set[str]) -> int:
    """0 presto_core, 1 train.infra, 2 train's shared folders, 3 train's commands; app is its own."""
    if mod.startswith("presto_core"):
        return 0
    if mod.startswith("train.infra") or mod == "train":
        return 1
    parts = mod.split(".")
    if mod in commands or len(parts) == 2 and (ROOT / "train" / f"{parts[1]}.py").is_file():
        return 3  # a top-level file of train/ is a command
    return 2


EDGES, NESTED, COMMANDS = graph()


def test_the_graph_is_read():
    assert {"train.base", "train.presto_ls", "train.data.build_corpus", "train.eval"} <= COMMANDS
    assert "train.diffusion.common" in EDGES["train.base"] and "presto_core.edm" in EDGES["train.diffusion.losses"]


def test_no_import_circles():
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in EDGES.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(EDGES):
        if v not in index:
            visit(v)
    assert circles == []


@pytest.mark.parametrize("mod", sorted(m for m in EDGES if m.startswith(("presto_core", "train"))))
def test_layers_only_import_downwards(mod):
    mine = layer(mod, COMMANDS)
    for dep in EDGES[mod]:
        assert not dep.startswith("app"), f"{mod} imports {dep}: the app sits above the library and training"
        theirs = layer(dep, COMMANDS)
        assert theirs <= mine, f"{mod} (layer {mine}) imports {dep} (layer {theirs})"
        if mine == 3 and dep.startswith("train"):
            assert dep not in COMMANDS, f"command {mod} imports command {dep}: move what they share to a folder"


def test_the_app_does_not_import_training():
    for mod, deps in EDGES.items():
        if mod.startswith("app"):
            assert not any(d.startswith("train") for d in deps), (mod, deps)


def test_no_project_import_inside_a_function():
    # Imports of project modules at the top of each file keep this graph visible; only heavy
    # optional third-party libraries are imported lazily.
    assert NESTED == {}
