"""The package's shape: no import cycle, lower layers never import the application, and every design citation
points at a section of docs/design.md that exists.

Layers, from the bottom (a module may import its own layer and those below, never above):

1. **base**: the top-level modules in :data:`BASE` — errors, configs, atomic files, image and weight I/O, the
   sampler, device names, the pre-trainings' shared progress bar and schedule. They import only each other.
2. **library**: ``igr.models``, ``igr.metrics`` and ``igr.data`` (their ``commands`` subpackages excepted). They
   import base modules and each other, never a top-level application module.
3. **application**: every other top-level module: training, export, evaluation, the benchmarks, the demo's
   stages.
4. **front ends**, what users call: the restoration pipeline, the app, the CLI and ``python -m igr`` (:data:`FRONT_ENDS`) and every
   ``commands`` subpackage. Nothing below imports them (e.g. the benchmarks do not import the pipeline).

Imports are read with ``ast`` from the source, at module level and inside functions alike (a lazy import still
makes the importing module depend on the imported one; an import cycle that is only lazy still means two modules
that cannot be understood apart). ``from igr.x import y`` counts as importing ``igr.x.y`` where that is a module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import igr

PACKAGE = Path(igr.__file__).parent
ROOT = PACKAGE.parent
BASE = {
    "igr.errors",
    "igr.config",
    "igr.atomic",
    "igr.imageio",
    "igr.weights_io",
    "igr.sampling",
    "igr.devices",
    "igr.pretraining",
}
LIBRARY = ("igr.models", "igr.metrics", "igr.data")
FRONT_ENDS = {"igr.pipeline", "igr.app", "igr.cli", "igr.__main__"}  # __main__: `python -m igr`, the CLI


def _modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package's ``__init__``)."""
    mods = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the package's modules it imports (top-level and function-level imports)."""
    mods = _modules(package)
    top = package.name
    graph = {}
    for name, (path, is_pkg) in mods.items():
        here = name if is_pkg else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from .x import y
                    parts = here.split(".")
                    target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.add(sub if sub in mods else target)
        graph[name] = {t for t in out if t.split(".")[0] == top and t in mods and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on_stack.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    if module in BASE:
        return 0
    if module in FRONT_ENDS or ".commands" in module:
        return 3
    if module.startswith(LIBRARY):
        return 1
    return 2


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets if layer(t) > layer(m))


def test_no_import_cycle_and_no_upward_import():
    """Catches: a new cycle (e.g. metrics.backbones <-> extractors) and a module reaching up a layer (e.g.
    models.init_weights -> export, metrics.tiny -> vae_train, bench -> pipeline)."""
    graph = import_graph()
    assert "igr.models.model" in graph["igr.pipeline"] or "igr.models" in graph["igr.pipeline"]  # the walk ran
    assert cycles(graph) == []
    assert upward_imports(graph) == []


def test_the_walker_sees_cycles_and_upward_imports_of_every_kind(tmp_path):
    """Catches: a walker that misses relative, lazy (function-level) or ``from pkg import module`` imports."""
    pkg = tmp_path / "igr"
    for rel, text in {
        "__init__.py": "",
        "errors.py": "",
        "export.py": "from igr.models import model\n",
        "bench.py": "import igr.pipeline\n",
        "pipeline.py": "",
        "models/__init__.py": "",
        "models/model.py": "def f():\n    from ..export import x\n",
        "metrics/__init__.py": "",
        "metrics/a.py": "from . import b\n",
        "metrics/b.py": "import igr.metrics.a\nfrom igr.errors import E\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert cycles(graph) == [["igr.export", "igr.models.model"], ["igr.metrics.a", "igr.metrics.b"]]
    assert upward_imports(graph) == ["igr.bench -> igr.pipeline", "igr.models.model -> igr.export"]


def test_every_design_citation_names_a_section_of_docs_design():
    """Catches: a citation of the old, unshipped DESIGN.md, and one naming a section docs/design.md lacks."""
    sections = set(re.findall(r"^## (\d+)\.", (ROOT / "docs" / "design.md").read_text(), re.M))
    assert sections >= {str(i) for i in range(1, 9)}
    stale, missing = [], []
    files = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.yaml"), *(ROOT / "docs").rglob("*.md")]
    files += [p for p in (ROOT / "tests").glob("*.py") if p.name != Path(__file__).name]
    files += [p for p in (ROOT / "README.md", ROOT / "Makefile") if p.is_file()]
    files += list((ROOT / "notebooks").glob("*.ipynb"))
    for path in files:
        text = path.read_text()
        if "DESIGN.md" in text:
            stale.append(str(path))
        for cited in re.findall(r"docs/design\.md ((?:§\d+(?:, )?)+)", text):
            missing += [f"{path}: §{n}" for n in re.findall(r"§(\d+)", cited) if n not in sections]
    assert stale == [] and missing == []
