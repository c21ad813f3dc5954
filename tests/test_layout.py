"""The house rules, checked on the source: task types are named only inside steer/tasks/, imports
point down the layers (cli -> sweep -> tasks -> results -> vectors -> lm -> base) with no
cycles, no private name crosses a package (benchmarks included), one atomic-write helper, one
spelling of "unsteered", and modules stay a few hundred lines."""

import ast
from collections import defaultdict
from pathlib import Path

from .conftest import ROOT

PKG = ROOT / "steer"
TASK_TYPES = {"generate", "readout", "choice", "preference", "code"}
# Lower number = lower layer; a module may import its own package and any lower layer.
LAYERS = {"errors": 0, "io": 0, "data": 0, "progress": 0, "lm": 1, "vectors": 2,
          "results": 3, "tasks": 4, "sweep": 5, "cli": 6}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield name, path, ast.parse(path.read_text(), str(path))


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(tree):
    """(module imported, names, lineno, at module level?) for every import in the file."""
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names], node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node.lineno, id(node) in top


def test_no_task_type_switch_outside_steer_tasks():
    found = []
    for name, path, tree in _modules():
        if _package(name) == "tasks":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            # `task.type == ...`, `spec.type in (...)` (a device's `.type` is not a task's)
            on_type = any(isinstance(s, ast.Attribute) and s.attr == "type"
                          and "device" not in ast.unparse(s.value) for s in sides)
            consts = {c.value for s in sides for c in ast.walk(s) if isinstance(c, ast.Constant)}
            if on_type or consts & TASK_TYPES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        for node in ast.walk(tree):  # tables keyed by task types
            if name != "steer" and isinstance(node, ast.Dict) and len({
                    k.value for k in node.keys if isinstance(k, ast.Constant)} & TASK_TYPES) > 1:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} (dict)")
    assert found == [], found


def test_imports_point_down_the_layers_and_have_no_cycles():
    wrong, graph = [], defaultdict(set)
    for name, path, tree in _modules():
        here = _package(name)
        if name == "steer":  # the public API re-exports from every layer, lazily
            continue
        for mod, _, line, top in _imports(tree):
            if not mod.startswith("steer."):
                continue
            there = _package(mod)
            if there != here and LAYERS.get(there, 0) > LAYERS.get(here, 0) and here != "cli":
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
            if top:
                graph[name].add(mod)
    assert wrong == [], wrong

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return trail + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, list(graph)) if c]
    assert cycles == [], cycles[:3]


def test_no_private_name_is_imported_across_packages():
    found = []
    sources = [(n, p, t) for n, p, t in _modules()]
    for path in sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "examples").glob(
            "*.py")):
        sources.append((f"{path.parent.name}.{path.stem}", path, ast.parse(path.read_text())))
    for name, path, tree in sources:
        for mod, names, line, _ in _imports(tree):
            if not mod.startswith("steer"):
                continue
            same = mod.startswith("steer.") and _package(mod) == _package(name) and \
                name.startswith("steer.")
            private = [n for n in names if n.startswith("_")] + [
                p for p in mod.split(".") if p.startswith("_")]
            if private and not same:
                found.append(f"{path.relative_to(ROOT)}:{line} {mod} {private}")
    assert found == [], found


def test_one_atomic_write_helper():
    found = []
    for name, path, tree in _modules():
        if name == "steer.io":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("replace", "rename") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], found


def test_one_spelling_of_unsteered():
    found = []
    for _, path, tree in _modules():
        for node in ast.walk(tree):
            ident = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(
                node, ast.Attribute) else node.name if isinstance(
                node, (ast.FunctionDef, ast.ClassDef)) else node.arg if isinstance(
                node, ast.arg) else "")
            if "baseline" in ident.lower():
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ident}")
    assert found == [], found


def test_modules_stay_a_few_hundred_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for _, p, _ in _modules()}
    largest = max(sizes, key=sizes.get)
    print(f"largest module: {largest}, {sizes[largest]} lines")
    assert sizes[largest] <= 500, (largest, sizes[largest])


def test_the_readme_maps_every_package():
    readme = (ROOT / "README.md").read_text()
    for pkg in sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").exists()):
        if pkg != "data":
            assert f"steer/{pkg}/" in readme, pkg
    assert Path(ROOT / "examples").is_dir()


def _calls(tree, names):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in names:
            yield node


def test_only_lm_registers_hooks():
    hooks = {"hooks", "register_forward_hook", "register_forward_pre_hook", "add_hook"}
    found = [f"{p.relative_to(ROOT)}:{n.lineno}" for name, p, tree in _modules()
             if _package(name) != "lm" for n in _calls(tree, hooks)]
    assert found == [], found


def test_only_the_run_directory_writes_into_it():
    """Nothing on a run's path (sweep, tasks, results) writes a file but rundir.py (the
    sandbox, without isolation, works in its own temporary directory)."""
    writes = {"write_text", "write_bytes", "to_csv", "to_parquet", "savefig", "save_file"}
    found = []
    for name, p, tree in _modules():
        if _package(name) not in ("sweep", "tasks", "results") or name in (
                "steer.sweep.rundir", "steer.tasks.sandbox"):
            continue
        found += [f"{p.relative_to(ROOT)}:{n.lineno}" for n in _calls(tree, writes)]
        found += [f"{p.relative_to(ROOT)}:{n.lineno} open" for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                  and n.func.id == "open"]
    assert found == [], found
