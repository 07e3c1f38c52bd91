"""The library's modules import in layers: no import cycle in ``medvae_lib``.

A cycle (``a`` imports ``b``, which imports ``a``) hides which module owns what and breaks as soon as
one of the imports moves to module level. The graph is read from the source with :mod:`ast`, every
import counted, including those inside functions, so a cycle through a deferred import fails too."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medvae_lib"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the file at ``path`` (module ``name``) imports, anywhere in it."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            # `from pkg import module` imports the module; `from module import name` the module
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            while (
                target and target not in known
            ):  # `import pkg.mod.attr` -> the module it names
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    return {name: imports_of(path, name, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_medvae_lib_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 10 and "medvae_lib.latent_downstream" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_deferred_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import c\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import thing\n")
    (pkg / "sub" / "c.py").write_text("import os\n\ndef g():\n    from .. import b\n")
    graph = import_graph(pkg)
    assert (
        graph["pkg.a"] == {"pkg.sub.c"}
        and graph["pkg.b"] == {"pkg.a"}
        and graph["pkg.sub.c"] == {"pkg.b"}
    )
    cycle = find_cycle(graph)
    assert (
        cycle is not None
        and cycle[0] == cycle[-1]
        and set(cycle) == {"pkg.a", "pkg.b", "pkg.sub.c"}
    )
    (pkg / "sub" / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) is None


@pytest.mark.parametrize(
    "module",
    [
        "medvae_lib.models",
        "medvae_lib.stats",
        "medvae_lib.losses",
        "medvae_lib.metrics",
        "medvae_lib.data",
        "medvae_lib.plotting",
    ],
)
def test_the_lowest_layers_import_no_chapter_module(module):
    graph = import_graph(PACKAGE)
    chapters = (  # chapter modules, and the files of those that are packages
        "medvae_lib.latent_downstream",
        "medvae_lib.medvae_stage1",
        "medvae_lib.medvae_stage2",
        "medvae_lib.medvae_3d",
        "medvae_lib.multimodal_theory",
        "medvae_lib.personalized_invariant",
        "medvae_lib.contrastive_benchmark",
    )
    found = {
        name
        for name in graph[module]
        if any(name == c or name.startswith(c + ".") for c in chapters)
    }
    assert not found, f"{module} imports chapter code: {sorted(found)}"
