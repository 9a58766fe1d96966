"""Dependencies flow one way: every module under t5x_lite/ imports only its own layer or layers to its left.

    errors -> checkpoints -> partitioning -> models -> data -> tasks -> decoding -> loading
           -> scoring / evaluation -> train -> study -> convert -> cli

Each module is parsed (ast) and every import is checked, at module level and inside functions, including
`importlib.import_module("t5x_lite...")` with a literal name (an `if __name__ == "__main__":` block
runs only as a program and is skipped).  The subcommand front ends (t5x_lite/cli.py,
__main__.py and every package's cli.py) are the cli layer.  t5x_lite/builders/ (the local dataset builders,
which run apt-get) sit after tasks and are imported only by t5x_lite/data/cli.py (`data build-local`).

Before the layering change these tests failed: test_every_import_points_left on
t5x_lite/data/tasks_downstream.py and data/tasks_local.py importing t5x_lite.evaluation.metrics and
.postprocessors (data -> evaluation); test_function_level_imports_of_the_package_are_marked_lazy on
data/tasks.py and data/pipeline.py importing each other inside functions; test_import_data_is_light on
`import t5x_lite.data` importing jax (through grain) and t5x_lite.evaluation; and
test_import_tasks_registers_the_builtin_tasks on the registry being filled by t5x_lite.data itself.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import t5x_lite

PACKAGE = pathlib.Path(t5x_lite.__file__).parent

# (layer, module prefixes), left to right.  A module may import modules of its own layer or of a layer
# to its left.  The package itself (t5x_lite/__init__.py) only holds __version__: it sits with errors.
LAYERS = [
    ("errors", ("t5x_lite.errors", "t5x_lite.jsonio")),   # one-line errors and exits; NaN-free JSON output
    ("checkpoints", ("t5x_lite.checkpoints",)),
    ("partitioning", ("t5x_lite.partitioning",)),
    ("models", ("t5x_lite.models",)),
    ("data", ("t5x_lite.data",)),
    ("tasks", ("t5x_lite.tasks",)),
    ("builders", ("t5x_lite.builders",)),
    ("decoding", ("t5x_lite.decoding",)),
    ("loading", ("t5x_lite.loading",)),
    ("scoring/evaluation", ("t5x_lite.scoring", "t5x_lite.evaluation")),
    ("train", ("t5x_lite.train",)),
    ("study", ("t5x_lite.study",)),          # ablation studies: plan and report runs of train + eval
    ("plot", ("t5x_lite.plot",)),            # `t5x-lite plot`: reads metrics.jsonl files, imports only errors
    ("convert", ("t5x_lite.convert",)),
    ("cli", ("t5x_lite.cli", "t5x_lite.__main__")),
]
BUILDERS_IMPORTED_BY = ("t5x_lite.data.cli", "t5x_lite.builders")


def _module_name(path: pathlib.Path) -> str:
    parts = ("t5x_lite",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    """The index of `module`'s layer in LAYERS; None for a module no layer names."""
    if module == "t5x_lite":
        return 0
    if module.rsplit(".", 1)[-1] == "cli":      # t5x_lite.data.cli, t5x_lite.evaluation.cli: front ends
        return len(LAYERS) - 1
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(module: str, modules: dict[str, pathlib.Path]) -> bool:
    return modules[module].name == "__init__.py"


def _imports(module: str, modules: dict[str, pathlib.Path]):
    """(line, imported t5x_lite module, inside a function?) for every import in `module`'s file."""
    tree = ast.parse(modules[module].read_text(), filename=str(modules[module]))
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    in_function, script_only = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("__name__ == '__main__'", "'__main__' == __name__"):
            script_only.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in script_only:     # runs only when the file is executed as a program, never on import
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            names = [node.args[0].value]
        for name in names:
            if name == "t5x_lite" or name.startswith("t5x_lite."):
                yield node.lineno, name, id(node) in in_function


def _where(module, line, modules):
    return f"{modules[module].relative_to(PACKAGE.parent)}:{line}"


def test_every_module_has_a_layer():
    modules = _modules()
    assert {"t5x_lite.data.tasks", "t5x_lite.tasks.metrics", "t5x_lite.builders.local"} <= set(modules)
    unplaced = sorted(m for m in modules if _layer(m) is None)
    assert not unplaced, f"modules with no layer (place them in LAYERS of {pathlib.Path(__file__).name}): {unplaced}"


def test_every_import_points_left():
    modules = _modules()
    bad = {}
    for module in modules:
        here = _layer(module)
        for line, target, nested in _imports(module, modules):
            there = _layer(target)
            if here is not None and there is not None and there > here:
                bad[(module, line, target)] = (f"{_where(module, line, modules)} {module} ({LAYERS[here][0]}) "
                                               f"imports {target} ({LAYERS[there][0]})"
                                               f"{' inside a function' if nested else ''}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad.values())


def test_builders_are_imported_only_by_build_local():
    modules = _modules()
    bad = [f"{_where(m, line, modules)} {m} imports {target}"
           for m in modules if not m.startswith(BUILDERS_IMPORTED_BY)
           for line, target, _ in _imports(m, modules) if target.startswith("t5x_lite.builders")]
    assert not bad, "only `t5x-lite data build-local` may import the builders:\n" + "\n".join(bad)


def test_function_level_imports_of_the_package_are_marked_lazy():
    """An import of a t5x_lite module inside a function is allowed only to keep a command fast, and says
    so with a `# lazy: ...` comment on its line; anything else is a cycle being dodged."""
    modules = _modules()
    bad = set()
    for module, path in modules.items():
        lines = path.read_text().splitlines()
        for line, target, nested in _imports(module, modules):
            above = lines[line - 2].strip() if line > 1 else ""
            if nested and "# lazy:" not in lines[line - 1] and not above.startswith("# lazy:"):
                bad.add(f"{_where(module, line, modules)} {lines[line - 1].strip()}")
    assert not bad, "function-level imports without a `# lazy:` reason:\n" + "\n".join(sorted(bad))


def test_layer_check_catches_a_backward_import(tmp_path):
    """The checker itself: a data module importing evaluation (what tasks_downstream.py used to do) and a
    nested import are both found, and a cli module may import anything."""
    modules = _modules()
    fake = tmp_path / "fake_data_module.py"
    fake.write_text("import os\nfrom t5x_lite.tasks import metrics\n\n\ndef f():\n"
                    "    from t5x_lite.train import loop\n    return loop\n")
    modules["t5x_lite.data.fake_data_module"] = fake
    found = list(_imports("t5x_lite.data.fake_data_module", modules))
    assert [(t, nested) for _, t, nested in found] == [("t5x_lite.tasks.metrics", False), ("t5x_lite.train.loop", True)]
    assert all(_layer(t) > _layer("t5x_lite.data.fake_data_module") for _, t, _ in found)
    assert _layer("t5x_lite.data.cli") == _layer("t5x_lite.cli") > _layer("t5x_lite.train.loop")
    assert _layer("t5x_lite.data.streams") < _layer("t5x_lite.tasks") < _layer("t5x_lite.evaluation.evaluator")


def test_import_data_is_light():
    """`import t5x_lite.data` imports neither jax (grain imports it) nor the task definitions/builders."""
    code = ("import sys, t5x_lite.data\n"
            "heavy = [m for m in ('jax', 'grain', 'flax', 'tensorflow', 'tensorflow_datasets') if m in sys.modules]\n"
            "later = [m for m in sys.modules if m.startswith(('t5x_lite.tasks', 't5x_lite.builders', "
            "'t5x_lite.evaluation', 't5x_lite.train', 't5x_lite.models'))]\n"
            "print(heavy, later)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []", out


def test_import_tasks_registers_the_builtin_tasks():
    code = ("import t5x_lite.data as d\nbefore = len(d.TaskRegistry.names())\nimport t5x_lite.tasks, sys\n"
            "names = d.TaskRegistry.names()\n"
            "print(before, all(n in names for n in ('builtin_span_corruption', 'c4_v220_full_lm', "
            "'glue_cola_v002', 'local_translate_en_de')), 'jax' in sys.modules)\n"
            "import t5x_lite.data.cli\n"
            "print('jax' in sys.modules, any(m.startswith('t5x_lite.builders') for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # the registries start empty; t5x_lite.tasks fills them; neither it nor the data CLI loads jax or the builders
    assert out.split() == ["0", "True", "False", "False", "False"], out
