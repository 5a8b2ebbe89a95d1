"""The shape of the code: imports point one way, kernels sit below the Python layer."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"fastpg": ROOT / "fastpg", "fastpg_cli": ROOT / "cli"}


def import_graph() -> dict:
    """Module -> the modules of this project it imports (absolute and relative, at any depth)."""
    graph = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            is_init = parts[-1] == "__init__"
            if is_init:
                parts.pop()
            name = ".".join(parts)
            here = parts if is_init else parts[:-1]  # the package a relative import starts from
            deps = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = ".".join(here[:len(here) - node.level + 1]) if node.level <= len(here) else None
                        if node.module:
                            deps.add(f"{base}.{node.module}")
                            deps.update(f"{base}.{node.module}.{alias.name}" for alias in node.names)
                        else:  # from . import config: the module config, not the package
                            deps.update(f"{base}.{alias.name}" for alias in node.names)
                    elif node.module:
                        deps.add(node.module)
                        deps.update(f"{node.module}.{alias.name}" for alias in node.names)
                elif isinstance(node, ast.Import):
                    deps.update(alias.name for alias in node.names)
            graph[name] = set()
            for dep in deps:
                if dep and dep.split(".")[0] in PACKAGES:
                    graph[name].add(dep)
    modules = set(graph)
    return {m: {d for d in deps if d in modules and d != m} for m, deps in graph.items()}


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()  # the package root included: no module imports it (__version__ has its own module)
    assert len(graph) > 20
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def folder_of(module: str) -> str:
    """The layer a module belongs to: its folder (``fastpg.kernels``, ``fastpg.sweeps``,
    ``fastpg.analysis``, ``fastpg.paper``, ``fastpg`` for the core library, ``fastpg_cli``)."""
    if module == "fastpg.codes":  # names and codes: below the kernels too
        return module
    parts = module.split(".")
    if parts[0] == "fastpg" and len(parts) >= 2 and (ROOT / "fastpg" / parts[1]).is_dir():
        return ".".join(parts[:2])
    return parts[0]


def test_kernels_and_the_library_never_import_the_layers_above():
    """``fastpg/kernels/`` holds every compiled module and imports nothing outside it but
    ``fastpg.codes``; no module outside it compiles anything (a sweep worker may set Numba's threads)."""
    graph = import_graph()
    kernels = {m for m in graph if folder_of(m) == "fastpg.kernels" and m != "fastpg.kernels"}
    assert {"fastpg.kernels.engine", "fastpg.kernels.tables", "fastpg.kernels.rng"} <= kernels
    for module in kernels:
        outside = {d for d in graph[module] if folder_of(d) != "fastpg.kernels" and d != "fastpg.codes"}
        assert not outside, (module, outside)
    root = Path(__file__).resolve().parent.parent / "fastpg"
    for path in root.rglob("*.py"):  # every @njit is under kernels/
        if "kernels" not in path.relative_to(root).parts:
            assert "@njit" not in path.read_text() and "from numba import" not in path.read_text(), path
    for module, deps in graph.items():
        if module.startswith("fastpg."):
            assert not any(d.startswith("fastpg_cli") for d in deps), module
    # names and codes are readable without compiling anything
    assert graph["fastpg.codes"] == set()
    for module in ("fastpg.store", "fastpg_cli.info", "fastpg.config"):
        assert not {d for d in graph[module] if folder_of(d) == "fastpg.kernels"}, module


def test_the_import_graph_sees_relative_imports_in_subfolders():
    graph = import_graph()
    assert "fastpg.codes" in graph["fastpg.kernels.steps"]  # from ..codes import ...
    assert "fastpg.kernels.tables" in graph["fastpg.kernels.sampling"]  # from .tables import ...
    assert "fastpg.kernels.engine" in graph["fastpg.api"]  # from .kernels.engine import Batch


def test_the_step_kernels_run_without_reference_counting():
    """Kernels on a step's path are compiled without Numba's runtime (``_nrt=False``: no atomic
    reference counts; docs/kernels.md, "What the kernels do"); dropping the switch by accident
    would cost about 40% of a PG step at small shapes without failing any other test."""
    from fastpg.kernels import advance, contexts, events, lanes, rng, sampling, steps, tables, updates, variates

    hot = [tables.fill_table, sampling.sample_response, updates.accumulate_score, updates.apply_update,
           tables.prefix_loglik, tables.softmax_planes, tables.token_logliks, steps._pg_step, steps.pg_learn,
           steps.count_samples, steps._rs_step, steps._learn_prefix, contexts.draw_labelled_tile, contexts.draw_context,
           rng.uniform, rng.fill_normal, events.moving_step, events.pool_classes, variates.binomial_variate,
           tables.softmax_table, tables.scores_planes, advance.held_gram,
           advance.add_held_scores, advance.apply_held, advance.hold_update, tables.log_partition_planes,
           sampling.sample_until_mistake, sampling.complete_response, rng.discard, lanes.lane_scores, lanes.load_lanes,
           lanes.tile_logits, tables.greedy_rows]
    for kernel in hot:
        assert kernel.targetoptions.get("_nrt") is False, kernel.py_func.__qualname__


def test_every_folder_of_the_library_is_installed():
    """A non-editable install (CI's) ships only the packages ``pyproject.toml`` lists: a new
    folder left out would import here and fail on a fresh machine."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(["fastpg", *p.parent.relative_to(ROOT / "fastpg").parts]) for p in (ROOT / "fastpg").rglob("__init__.py")}
    folders |= {"fastpg_cli"}
    assert listed == folders


LAYERS = ["fastpg.codes", "fastpg.kernels", "fastpg", "fastpg.analysis", "fastpg.sweeps", "fastpg.paper", "fastpg_cli"]
# the core's RunData.query_complexity reads analysis.complexity: the one upward edge, a measure the result type offers
ALLOWED_UP = {("fastpg.result", "fastpg.analysis.complexity")}


def upward_imports(graph) -> list[str]:
    """Every import of a module from a layer above its own (:data:`LAYERS`, bottom first). The
    package root, the public facade (``fastpg.run``, ``fastpg.load_sweep``...), re-exports from all
    layers and is skipped; that no module imports it is checked separately."""
    found = []
    for module, deps in graph.items():
        if module == "fastpg":
            continue
        for dep in sorted(deps):
            if LAYERS.index(folder_of(dep)) > LAYERS.index(folder_of(module)) and (module, dep) not in ALLOWED_UP:
                found.append(f"{module} imports {dep}, a layer above it")
    return found


def test_each_folder_imports_only_the_layers_below_it():
    """The folders are layers, from the bottom: ``codes``, ``kernels``, the core library
    (``fastpg/*.py``: a run end to end, its files and results), ``analysis``, ``sweeps``, ``paper``,
    then the CLI. A module imports only its own layer and those below."""
    graph = import_graph()
    assert {folder_of(m) for m in graph} == set(LAYERS)
    assert not any("fastpg" in graph[m] for m in graph if m.startswith("fastpg.")), "a module imports the root"
    assert upward_imports(graph) == []


def test_the_layer_check_finds_an_upward_import():
    assert folder_of("fastpg.sweeps.spec") == "fastpg.sweeps" and folder_of("fastpg.api") == "fastpg"
    assert folder_of("fastpg.kernels") == "fastpg.kernels" and folder_of("fastpg_cli.main") == "fastpg_cli"
    planted = {"fastpg.store": {"fastpg.sweeps.index"}, "fastpg.sweeps.index": {"fastpg.store"},
               "fastpg.kernels.rng": {"fastpg.config"}, "fastpg.result": {"fastpg.analysis.complexity"}}
    assert sorted(upward_imports(planted)) == ["fastpg.kernels.rng imports fastpg.config, a layer above it",
                                       "fastpg.store imports fastpg.sweeps.index, a layer above it"]
