"""Recipes: validation errors name the bad key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.core.errors import RecipeError
from assay.core.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]


def test_good_recipe_both_step_forms():
    r = Recipe.from_text("""
name: t
steps:
  - length_filter: {min_chars: 10}
  - sample: {fraction: 0.5}
  - step: length_filter
    params: {max_chars: 100}
  - length_filter
""")
    steps = r.instantiate()
    assert [s.name for s in steps] == ["length_filter", "sample", "length_filter", "length_filter"]
    assert steps[0].params.min_chars == 10 and steps[2].params.max_chars == 100


def test_malformed_yaml_points_at_line():
    with pytest.raises(RecipeError, match=r"malformed YAML at line 3"):
        Recipe.from_text("name: t\nsteps:\n  - sample: fraction: 0.5\n")


def test_unknown_step_suggests():
    with pytest.raises(RecipeError, match=r"steps\[0\]: unknown step 'lenght_filter'; did you mean 'length_filter'"):
        Recipe.from_text("steps: [lenght_filter]")


def test_unknown_param_names_path_and_choices():
    with pytest.raises(RecipeError) as e:
        Recipe.from_text("steps:\n  - sample: {fraction: 0.5}\n  - length_filter: {min_char: 3}\n")
    msg = str(e.value)
    assert "steps[1].length_filter.min_char: unknown key 'min_char'; did you mean 'min_chars'?" in msg
    assert "max_chars" in msg


def test_wrong_type_and_missing_required():
    with pytest.raises(RecipeError, match=r"steps\[0\]\.sample\.fraction: .*(number|float).*'lots'"):
        Recipe.from_text("steps: [{sample: {fraction: lots}}]")
    with pytest.raises(RecipeError, match=r"steps\[0\]\.sample\.fraction: Field required"):
        Recipe.from_text("steps: [sample]")


def test_bad_top_level_keys():
    with pytest.raises(RecipeError, match=r"output\.format"):
        Recipe.from_text("output: {format: csv}\nsteps: []")
    with pytest.raises(RecipeError, match=r"stepz"):
        Recipe.from_text("stepz: []")
    with pytest.raises(RecipeError, match=r"a recipe is a mapping"):
        Recipe.from_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match=r"parameters must be a mapping"):
        Recipe.from_text("steps: [{sample: 0.5}]")


def test_missing_and_non_utf8_file(tmp_path: Path):
    with pytest.raises(RecipeError, match="recipe not found"):
        Recipe.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        Recipe.from_yaml(bad)


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path: Path):
    if path.name == "flywheel.yaml":  # the one recipe of rounds: `assay flywheel run` reads it
        from assay.flywheel.recipe import FlywheelRecipe

        FlywheelRecipe.from_yaml(path)
        with pytest.raises(RecipeError, match="assay flywheel run"):  # and `assay run` says where it belongs
            Recipe.from_yaml(path)
        return
    Recipe.from_yaml(path).instantiate()


def test_fingerprint_ignores_description():
    a = Recipe.from_text("description: one\nsteps: [{sample: {fraction: 0.5}}]")
    b = Recipe.from_text("description: two\nsteps: [{sample: {fraction: 0.5}}]")
    c = Recipe.from_text("description: two\nsteps: [{sample: {fraction: 0.4}}]")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_dumped_recipe_round_trips():
    r = Recipe.from_text("name: t\nsteps:\n  - sample: {fraction: 0.5}\n  - length_filter\n")
    again = Recipe.from_dict(r.model_dump(mode="json"))
    assert again == r and again.fingerprint() == r.fingerprint()


def test_loop_and_flywheel_recipes_report_yaml_errors_like_run_recipes(tmp_path):
    """The evolve loop's and the flywheel's recipe files are read by the same code as `assay run` recipes: a
    malformed file names its line and column, a missing one and one that is not UTF-8 say so in one line."""
    from assay.evolve.loop import LoopError, LoopRecipe
    from assay.flywheel.recipe import FlywheelError, FlywheelRecipe

    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 2\nroute:\n  budget: [1, 2\n")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("rounds: 2 # caf\xe9\n".encode("latin-1"))
    for cls, error in ((LoopRecipe, LoopError), (FlywheelRecipe, FlywheelError)):
        with pytest.raises(error, match=r"bad\.yaml: malformed YAML at line \d+, column \d+"):
            cls.from_yaml(bad)
        with pytest.raises(error, match=r"recipe not found: .*nope\.yaml"):
            cls.from_yaml(tmp_path / "nope.yaml")
        with pytest.raises(error, match=r"latin\.yaml: not UTF-8 text"):
            cls.from_yaml(latin)
