"""The layers hold: ``core/`` (records, steps, pipelines, recipes) loads no model library; the models live in
``models/``; the annotation app and the knowledge layer build on the shared ``platform/`` layer and on nothing of each
other (the expert network, ``experts/``, is the one package on top of both). And the one migration chain, moved to
``platform/migrations``, still upgrades a database an earlier Assay made."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import assay

SRC = Path(assay.__file__).parent
MODEL_LIBRARIES = ("torch", "onnxruntime", "llama_cpp", "sentence_transformers", "transformers", "tokenizers",
                   "open_clip", "rapidocr_onnxruntime", "PIL")


def modules_of(package: str) -> list[str]:
    """Every module of an ``assay`` sub-package (recursively), by dotted name."""
    root = SRC / package.split(".", 1)[1].replace(".", "/")
    return [package] + [m.name for m in pkgutil.walk_packages([str(root)], prefix=f"{package}.")]


def imported_modules(path: Path) -> set[str]:
    """The absolute module names a source file imports, anywhere in it (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def imports_of_package(package: str) -> dict[str, set[str]]:
    root = SRC / package
    return {str(p.relative_to(SRC)): imported_modules(p) for p in sorted(root.rglob("*.py"))}


def loaded_after_import(modules: list[str]) -> set[str]:
    """The top-level names in ``sys.modules`` after importing ``modules`` in a fresh interpreter (plus assay's own
    sub-packages as ``assay.<name>``)."""
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "names = {n.split('.')[0] for n in sys.modules}\n"
            "names |= {'.'.join(n.split('.')[:2]) for n in sys.modules if n.startswith('assay.')}\n"
            "print(json.dumps(sorted(names)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


#: docs/architecture.md, "Layers": a package imports only from its own layer or the layers below it
LAYERS = {
    "core": 0, "io": 0, "run": 0,                                    # the foundation
    "trajectories": 0,                                               # LeRobot episodes: io/ reads them; core only
    "models": 1, "platform": 1,                                      # shared layers
    "annotate": 2, "knowledge": 2,                                   # the two web services (never each other)
    "harvest": 3, "synthesize": 3, "evolve": 3, "lab": 3, "experts": 3,    # stages
    "flywheel": 4,                                                   # the loop over all stages
    "cli": 5, "__main__": 5,                                         # the command line wires it all
}


def package_imports() -> dict[str, set[tuple[str, str]]]:
    """Top-level package (or module) of ``assay`` → {(imported package, importing file)}, other packages only."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue
        pkg = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for module in imported_modules(path):
            if module.startswith("assay.") and module.split(".")[1] != pkg:
                found.setdefault(pkg, set()).add((module.split(".")[1], str(rel)))
    return found


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages - set(LAYERS) == set(), "place the new package in LAYERS (and in docs/architecture.md)"


def test_packages_import_only_their_layer_or_below():
    up = sorted(f"{where}: {pkg} (layer {LAYERS[pkg]}) imports {target} (layer {LAYERS[target]})"
                for pkg, edges in package_imports().items() for target, where in edges
                if pkg in LAYERS and target in LAYERS and LAYERS[target] > LAYERS[pkg])
    assert up == []


def test_core_loads_no_model_library():
    core = modules_of("assay.core")
    assert "assay.core.step" in core and "assay.core.recipe" in core
    loaded = loaded_after_import(core)
    assert not loaded.intersection(MODEL_LIBRARIES), sorted(loaded.intersection(MODEL_LIBRARIES))
    assert not loaded.intersection({"assay.models", "assay.annotate", "assay.knowledge", "assay.platform"})


def test_core_holds_no_model_code():
    """Embedders and LLM backends are in models/: nothing in core/ imports them (or a model library), even lazily."""
    for path, imported in imports_of_package("core").items():
        bad = {m for m in imported if m.split(".")[0] in MODEL_LIBRARIES or m.startswith("assay.models")}
        assert not bad, f"{path} imports {sorted(bad)}"


def test_models_build_on_core_only():
    stages = ("assay.harvest", "assay.synthesize", "assay.evolve", "assay.annotate", "assay.knowledge",
              "assay.experts", "assay.lab", "assay.flywheel", "assay.platform", "assay.run")
    for path, imported in imports_of_package("models").items():
        bad = {m for m in imported if m.startswith(stages)}
        assert not bad, f"{path} imports {sorted(bad)}"


@pytest.mark.parametrize("package, forbidden", [
    ("platform", ("assay.annotate", "assay.knowledge", "assay.experts")),
    ("annotate", ("assay.knowledge", "assay.experts")),
    ("knowledge", ("assay.annotate", "assay.experts")),
])
def test_web_services_meet_only_in_the_platform(package, forbidden):
    """No module of the package names the forbidden ones in an import statement (function-level ones included)."""
    for path, imported in imports_of_package(package).items():
        bad = sorted(m for m in imported if m.startswith(forbidden))
        assert not bad, f"{path} imports {bad}: go through assay.platform"


@pytest.mark.parametrize("package, forbidden", [
    ("assay.annotate", {"assay.knowledge", "assay.experts"}),
    ("assay.knowledge", {"assay.annotate", "assay.experts"}),
])
def test_web_services_do_not_load_each_other(package, forbidden):
    """Importing every module of one service loads nothing of the other, not even through a third package."""
    loaded = loaded_after_import(modules_of(package))
    assert "assay.platform" in loaded
    assert not loaded.intersection(forbidden), sorted(loaded.intersection(forbidden))


OLD_HEAD = "0006"  # the head of the chain when it lived in annotate/migrations


@pytest.mark.parametrize("made_at", ["0001", "0005", OLD_HEAD])
def test_a_database_made_by_an_earlier_assay_upgrades(tmp_path, made_at):
    """The revision ids did not change with the move: a database stamped by the old chain is recognised and brought
    to the current head, and its schema then matches the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from assay.platform.db import Database, alembic_config, current_revision, upgrade
    from assay.platform.models import all_tables

    db = Database(str(tmp_path / "old.db"))
    try:
        upgrade(db.write_engine, made_at)
        with db.write_engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == made_at
        scripts = ScriptDirectory.from_config(alembic_config(db.write_engine))
        assert {"0001", "0002", "0003", "0004", "0005", OLD_HEAD} <= {r.revision for r in scripts.walk_revisions()}
        assert db.ensure_schema() is (made_at not in scripts.get_heads())
        assert current_revision(db.write_engine) == scripts.get_current_head()
        with db.write_engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), all_tables()) == []
    finally:
        db.dispose()
