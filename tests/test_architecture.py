"""The shape of the code: imports point one way, kernels sit below the Python layer."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"fastpg": ROOT / "fastpg", "fastpg_cli": ROOT / "cli"}


def import_graph() -> dict:
    """Module -> the modules of this project it imports (absolute and relative, at any depth)."""
    graph = {}
    for package, folder in PACKAGES.items():
        for path in folder.glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            deps = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package if node.level == 1 else None
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


KERNELS = {"fastpg.rng", "fastpg.vecmath", "fastpg.simd", "fastpg.variates", "fastpg.model", "fastpg.contexts", "fastpg.steps",
           "fastpg.events", "fastpg.advance", "fastpg.engine"}


def test_kernels_and_the_library_never_import_the_layers_above():
    graph = import_graph()
    for module in KERNELS:
        above = {d for d in graph[module] if d not in KERNELS | {"fastpg.codes"}}
        assert not above, (module, above)
    for module, deps in graph.items():
        if module.startswith("fastpg."):
            assert not any(d.startswith("fastpg_cli") for d in deps), module
    # names and codes are readable without compiling anything
    assert graph["fastpg.codes"] == set()
    for module in ("fastpg.store", "fastpg_cli.info", "fastpg.config"):
        assert not graph[module] & KERNELS, module


def test_the_step_kernels_run_without_reference_counting():
    """Kernels on a step's path are compiled without Numba's runtime (``_nrt=False``: no atomic
    reference counts; docs/design.md, "What the kernels do"); dropping the switch by accident
    would cost about 40% of a PG step at small shapes without failing any other test."""
    from fastpg import advance, contexts, events, model, rng, steps, variates

    hot = [model.fill_table, model.sample_response, model.accumulate_score, model.apply_update, model.prefix_loglik,
           model.softmax_planes, model.token_logliks, steps._pg_step, steps.pg_learn,
           steps.count_samples, steps._rs_step, steps._learn_prefix, contexts.draw_labelled_tile, contexts.draw_context,
           rng.uniform, rng.fill_normal, events.moving_step, events.pool_classes, variates.binomial_variate,
           model.softmax_table, model.scores_planes, advance.held_gram,
           advance.add_held_scores, advance.apply_held, advance.hold_update, model.log_partition_planes,
           model.sample_until_mistake, model.complete_response, rng.discard, model.lane_scores, model.load_lanes,
           model.tile_logits, model.greedy_rows]
    for kernel in hot:
        assert kernel.targetoptions.get("_nrt") is False, kernel.py_func.__qualname__
