"""The defaults are the best configuration measured: each method's ``--recipe recommended`` against the committed
3-seed slices (results/compare), and the tables that show it (docs/results.md, README's Which method?)."""

import json
import os

import pytest

from experiments.first_session import table as first_session_table
from experiments.tables import measured_settings, recipes_table, reproduce_table, which_method_table, write_tables
from peft_memory.continual import METHODS

RESULTS = os.path.join(os.path.dirname(__file__), "..", "results", "compare")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_recommended_recipe_is_the_methods_best_measured_setting(method):
    """Best mean CIL over WordNet and Fashion-MNIST among the method's measured settings. A new slice that moves
    another setting ahead fails here until the recipe follows it (or the slice is wrong)."""
    ranked = measured_settings(RESULTS, method)
    assert ranked, f"{method}: no setting measured on both sequences"
    best, means = ranked[0]
    assert best == METHODS[method].recipes["recommended"], (method, [(s.label, m) for s, m in ranked[:3]])
    assert len(ranked) == 1 or min(means.values()) > 0.5  # a measured row, not an empty one


def test_the_committed_tables_show_the_defaults():
    recipes = recipes_table(RESULTS)
    assert "| soft_mask | gaussian + product (first-session) | 80.2 | 84.8 | 82.5 | gaussian + combined " \
           "(first-session) | 81.7 | gradient_id + routed | 49.1 |" in recipes
    which = which_method_table(RESULTS)
    assert "| `soft_mask` | gaussian + product (first-session) | 80.2 ± 1.5 | 84.8 ± 0.9 |" in which
    assert "| SimpleCIL (nearest class mean, no training) | `simple_cil` nearest_mean + unified | 66.7 ± 0.5 | " \
           "62.2 ± 2.2 | baseline |" in which
    assert "| Upper bound: one adapter on every class at once | `joint` gaussian + unified (first-session) | " \
           "82.5 ± 1.6 | 86.0 ± 0.9 | not continual |" in which


def _result(method, mode, rule, cil, first=False):
    return {"method": method, "task_identity": {"mode": mode, "per_sample": True, "cil_rule": rule},
            "average_accuracy": cil, "til_average_accuracy": 0.9, "forgetting": 0.1, "task_id_accuracy": 0.5,
            "config": {"first_session_adaptation": first}}


def test_write_tables_fills_the_markers_and_refuses_a_wrong_folder(tmp_path):
    for benchmark, shift in (("wordnet", 0.0), ("fashion_mnist", 0.1)):
        folder = tmp_path / "results" / benchmark / "seed_0"
        folder.mkdir(parents=True)
        rows = {"soft_mask_first_session__gaussian__product": _result("soft_mask", "gaussian", "product", 0.7 + shift,
                                                                      first=True),
                "soft_mask": _result("soft_mask", "gradient_id", "routed", 0.4 + shift)}
        for name, record in rows.items():
            (folder / f"{name}.json").write_text(json.dumps(record))
    results, readme = tmp_path / "results.md", tmp_path / "README.md"
    results.write_text("<!-- compare:wordnet -->\n<!-- /compare:wordnet -->\n<!-- compare:fashion_mnist -->\n"
                       "<!-- /compare:fashion_mnist -->\n<!-- recipes -->\nold\n<!-- /recipes -->\n")
    readme.write_text("top\n<!-- which-method -->\nold\n<!-- /which-method -->\nend\n")
    write_tables(str(tmp_path / "results"), None, str(results), str(readme))
    text = readme.read_text()
    assert "old" not in text and text.startswith("top\n") and text.endswith("end\n")
    assert "| `soft_mask` | gaussian + product (first-session) | 70.0 | 80.0 |" in text
    assert "| soft_mask | gaussian + product (first-session) | 70.0 | 80.0 | 75.0 | gradient_id + routed | 45.0 |" \
           in results.read_text()
    before = readme.read_text()
    with pytest.raises(ValueError, match="holds no committed slice of any benchmark"):
        write_tables(str(tmp_path / "reslts"), None, str(results), str(readme))
    with pytest.raises(ValueError, match=r"holds no committed slice of \['cifar'\]"):
        write_tables(str(tmp_path / "results"), ["cifar"], str(results), str(readme))
    assert readme.read_text() == before  # a mistyped folder blanks nothing


def test_the_reproduce_reports_make_one_row_each(tmp_path):
    report = {"benchmark": "wordnet", "seed": 0, "method": "soft_mask", "recipe": "recommended",
              "setting": "gaussian + product (first-session)",
              "identical": {"accuracy_matrix": True, "til_accuracy_matrix": True, "task_id_accuracy_matrix": False},
              "average_accuracy": {"reproduced": 0.796, "committed": 0.796}}
    (tmp_path / "wordnet" / "seed_0").mkdir(parents=True)
    (tmp_path / "wordnet" / "seed_0" / "soft_mask__recommended.json").write_text(json.dumps(report))
    assert reproduce_table(str(tmp_path)).splitlines()[2] == (
        "| WordNet (seed 0) | `soft_mask` | recommended | gaussian + product (first-session) | 79.6 | 79.6 | no | ? / ? |")


def test_the_first_session_reports_make_one_table_over_their_seeds(tmp_path):
    def report(seed, ten, four, five):
        def entry(acc):
            return {"average_accuracy": acc, "task_id_accuracy": acc + 0.02, "accuracy_matrix": []}
        return {"seed": seed, "cut": [4, 2], "runs": {"soft_mask (gaussian + product (first-session))": {
            "first_session_of_4": entry(four), "committed_wordnet_10split": entry(ten),
            "committed_wordnet": entry(five) if five else None}}}

    with pytest.raises(ValueError, match="holds no report: run `python -m experiments first-session --seed 0` first"):
        first_session_table(str(tmp_path))
    for seed, values in ((2, (0.76, 0.80, None)), (0, (0.74, 0.78, 0.79))):
        (tmp_path / f"wordnet_seed_{seed}.json").write_text(json.dumps(report(seed, *values)))
    results = tmp_path / "results.md"
    results.write_text("a\n<!-- first-session -->\nold\n<!-- /first-session -->\nb\n")
    table = first_session_table(str(tmp_path), str(results))
    assert table.splitlines()[2] == ("| soft_mask (gaussian + product (first-session)) | 75.0 ± 1.4 (77.0 ± 1.4) | "
                                     "79.0 ± 1.4 (81.0 ± 1.4) | 79.0 (81.0) | 0,2 |")
    assert results.read_text() == f"a\n<!-- first-session -->\n{table}\n<!-- /first-session -->\nb\n"
