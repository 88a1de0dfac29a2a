"""The package's layers run one way: no import cycle, no upward import, and no torch where no model runs.

``LAYERS`` is the package's layout, lowest first: the shared foundation, the model files on disk, then the data path
(stimulus -> backbone -> readout -> selection -> space -> sink), the encoder that runs it, and what is built on top.
A module may import modules of its own layer or of lower ones (at module level or inside a function).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "berg"

LAYERS = [
    ("foundation", ["berg", "berg.errors", "berg.validation", "berg._optional", "berg._io", "berg._yaml", "berg.config",
                    "berg.card_registries", "berg.card_schema", "berg.cards", "berg.registry", "berg.model_cards"]),
    ("storage", ["berg.storage", "berg.storage.formats", "berg.storage.manifest", "berg.storage.safe_pickle", "berg.storage.native",
                 "berg.storage.legacy_metadata", "berg.storage.legacy", "berg.storage.berg_surface", "berg.storage.berg_sensors", "berg.storage.fwrf",
                 "berg.storage.synthetic", "berg.storage.wheels", "berg.mni", "berg.storage.img2fmri"]),
    ("stimulus", ["berg.video", "berg.stimuli", "berg.baselines"]),
    ("backbone", ["berg.backbones"]),
    ("readout", ["berg.readout"]),
    ("space", ["berg.spaces", "berg.spaces.*", "berg.selection", "berg.group_readout", "berg.metadata"]),
    ("adapter", ["berg.adapters", "berg.adapters.*"]),
    ("sink", ["berg.writers", "berg.writers.*", "berg.sinks"]),
    ("encoder", ["berg.encoder", "berg.shared_backbone"]),
    ("movie", ["berg.hrf", "berg.film_record", "berg.movie"]),
    ("fetch", ["berg.fetch"]),
    ("api", ["berg.api", "berg.analysis"]),
    ("training", ["berg.training.*"]),
    ("batch", ["berg.batch.*"]),
    ("cli", ["berg.cli.*"]),
]

# Modules that run no model: importing one alone must not load torch.
TORCH_FREE = ["berg", "berg.errors", "berg.validation", "berg._optional", "berg._io", "berg._yaml", "berg.config",
              "berg.card_registries", "berg.card_schema", "berg.cards", "berg.registry", "berg.model_cards",
              "berg.storage", "berg.storage.formats", "berg.storage.manifest", "berg.storage.safe_pickle", "berg.storage.native",
              "berg.storage.legacy_metadata", "berg.storage.legacy", "berg.storage.berg_surface", "berg.storage.berg_sensors", "berg.storage.fwrf",
              "berg.storage.synthetic", "berg.storage.wheels", "berg.mni", "berg.storage.img2fmri", "berg.video",
              "berg.baselines", "berg.selection", "berg.spaces", "berg.spaces.*", "berg.group_readout",
              "berg.metadata",
              "berg.writers", "berg.writers.*", "berg.sinks", "berg.hrf", "berg.film_record", "berg.movie", "berg.fetch", "berg.api", "berg.analysis",
              "berg.batch", "berg.batch.job", "berg.batch.units", "berg.batch.records", "berg.batch.runner",
              "berg.batch.derivatives",
              "berg.cli.*"]
# Modules that run a model (or train one) and may load torch when imported.
RUNS_A_MODEL = ["berg.stimuli", "berg.backbones", "berg.readout", "berg.encoder", "berg.shared_backbone",
                "berg.adapters", "berg.adapters.*",
                "berg.batch.execute", "berg.batch.grouping", "berg.batch.local", "berg.batch.ray_engine", "berg.training.*"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__main__.py"}


def _matches(module: str, patterns: list[str]) -> bool:
    return any(module == p or (p.endswith(".*") and (module == p[:-2] or module.startswith(p[:-1])))
               for p in patterns)


def _layer(module: str) -> int:
    found = [i for i, (_, patterns) in enumerate(LAYERS) if _matches(module, patterns)]
    assert len(found) == 1, f"{module} is in {len(found)} layers; put it in exactly one of LAYERS"
    return found[0]


def _imports(module: str) -> set[str]:
    """The berg modules ``module`` imports anywhere in its source (module level, functions, TYPE_CHECKING)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:  # `from berg import api` imports the module berg.api
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_module_has_a_layer_and_a_torch_class():
    for module in MODULES:
        _layer(module)
        classes = [_matches(module, names) for names in (TORCH_FREE, RUNS_A_MODEL)]
        assert sum(classes) == 1, f"{module}: list it in exactly one of TORCH_FREE, RUNS_A_MODEL"


def test_no_upward_import():
    upward = sorted((module, dep) for module, deps in GRAPH.items() for dep in deps
                    if _layer(dep) > _layer(module))
    assert not upward, "upward imports (module -> higher layer): " + ", ".join(f"{a} -> {b}" for a, b in upward)


def test_no_import_cycle():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == "open":
                return [*path[path.index(dep):], dep] if dep in path else [module, dep]
            if dep not in state and (cycle := visit(dep, [*path, dep])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(MODULES):
        if module not in state:
            cycle = visit(module, [module])
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _matches(m, TORCH_FREE)))
def test_module_that_runs_no_model_does_not_import_torch(module):
    code = (f"import importlib, sys; importlib.import_module({module!r}); "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')); "
            "print(' '.join(loaded[:5]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"importing {module} alone loads {done.stdout.strip()}"


def test_every_package_is_installed():
    """pyproject lists the packages (the cards' folder is mapped into berg.model_cards): none may be left out."""
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {_module_name(p) for p in PACKAGE.rglob("__init__.py")} | {"berg.model_cards"}
    assert set(config["packages"]) == on_disk
    assert (PACKAGE.parent / config["package-dir"]["berg.model_cards"] / "__init__.py").is_file()


def test_no_module_names_a_model():
    """A model is a card and data: no module of berg names a packaged model's id."""
    import yaml

    ids = [yaml.safe_load(p.read_text())["model_id"] for p in (PACKAGE.parent / "model_cards").glob("*.yaml")]
    assert len(ids) >= 3
    named = sorted((str(path.relative_to(PACKAGE.parent)), model_id) for path in PACKAGE.rglob("*.py")
                   for model_id in ids if model_id in path.read_text())
    assert not named, named
