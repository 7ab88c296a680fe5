"""`llamaforge ladder`: the corpus's training tokens from the manifest, hours = tokens x epochs /
tokens per second, cost = hours x $/hour, the committed recipe per rung (or the planner's plan on
other hardware, or the smallest hardware that would fit), the gate before each next rung."""

from __future__ import annotations

import pytest

from llamaforge.planning.catalog import parse_hardware
from llamaforge.errors import UserError
from llamaforge.planning.ladder import build_ladder, corpus_tokens, load_ladder_facts, training_hours
from llamaforge.recipe.registry import list_recipes

from .run_folder import write_manifest


@pytest.fixture
def manifest(tmp_path):
    # 1,000 identity rows of 40 tokens + 3,000 general rows of 20 tokens = 100,000 tokens per epoch
    return write_manifest(tmp_path / "corpus", categories={"identity": (1000, 40.0), "general": (3000, 20.0)})


def test_corpus_tokens_are_train_rows_times_mean_length_per_category(manifest):
    from llamaforge.corpus.manifest import load_manifest

    t = corpus_tokens(load_manifest(manifest, verify="none"))
    assert t.per_category == {"general": 60_000, "identity": 40_000}
    assert t.tokens_per_epoch == 100_000
    assert t.exact is False and "approximately" in t.approximation and "mix repeats" in t.approximation


def test_a_corpus_without_training_rows_is_refused(tmp_path, cli):
    path = write_manifest(tmp_path / "empty", categories={"identity": (0, 40.0)})
    res = cli("ladder", "--corpus", path)
    assert res.code == 2 and "no training tokens" in res.err


def test_training_hours_is_tokens_times_epochs_over_throughput():
    assert training_hours(3_600_000, 2, 1000) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        training_hours(1, 1, 0)


def test_each_default_rung_uses_its_committed_recipe_and_prices_it(manifest, cli):
    data = cli("ladder", "--corpus", manifest, "--epochs", "3", "--json").json()
    facts = load_ladder_facts()
    assert [r["name"] for r in data["rungs"]] == ["8B", "70B", "405B"]
    assert data["corpus"]["tokens_per_epoch"] == 100_000 and data["epochs"] == 3
    entries = {e.path: e for e in list_recipes()}
    for rung, spec in zip(data["rungs"], facts.rungs):
        assert rung["source"] == "committed" and rung["fits"] is True
        assert rung["recipe"] == f"recipes/{spec.recipe}.yaml"
        entry = entries[rung["recipe"]]
        assert rung["tokens_per_s"] == entry.tokens_per_s and rung["hardware"] == entry.hardware
        assert rung["hours"] == pytest.approx(100_000 * 3 / entry.tokens_per_s / 3600)
        assert rung["cost_usd"] == pytest.approx(rung["hours"] * parse_hardware(entry.hardware).usd_per_hour)
        assert rung["gate"]["profile"] == "release"
    assert "if marginal, stop here" in data["rungs"][1]["gate"]["otherwise"]
    assert data["rungs"][-1]["gate"]["before"] is None
    total = data["total_if_every_rung_runs"]
    assert total["hours"] == pytest.approx(sum(r["hours"] for r in data["rungs"]), abs=0.01)
    assert total["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in data["rungs"]), abs=0.01)


def test_more_epochs_cost_proportionally_more(manifest, cli):
    one = cli("ladder", "--corpus", manifest, "--epochs", "1", "--json").json()["rungs"]
    four = cli("ladder", "--corpus", manifest, "--epochs", "4", "--json").json()["rungs"]
    for a, b in zip(one, four):
        assert b["hours"] == pytest.approx(4 * a["hours"]) and b["cost_usd"] == pytest.approx(4 * a["cost_usd"])


def test_other_hardware_uses_a_committed_recipe_or_the_planner_or_says_what_would_fit(manifest):
    from llamaforge.corpus.manifest import load_manifest

    tokens = corpus_tokens(load_manifest(manifest, verify="none"))
    ladder = build_ladder(tokens, list_recipes(), hardware=[parse_hardware("1xRTX4090-24GB")])
    r8, r70, r405 = ladder.rungs
    assert r8.source == "committed" and r8.recipe.endswith("lora-1xRTX4090-24GB.yaml")
    assert r70.source == "planner" and r70.method == "qlora" and r70.tokens_per_s > 0
    assert r70.hours == pytest.approx(training_hours(100_000, 3, r70.tokens_per_s))
    assert "llamaforge render --model llama-3.1-70b --gpus 1xRTX4090-24GB" in r70.note
    assert r405.source == "does_not_fit" and r405.hours is None and r405.cost_usd is None
    assert r405.smallest_hardware and "smallest catalog hardware that fits" in r405.note
    assert ladder.total_hours is None


def test_gpus_once_per_rung_in_order(manifest, cli):
    data = cli("ladder", "--corpus", manifest, "-g", "1xH100-80GB", "-g", "8xA100-80GB", "-g", "8xH200-141GB",
               "--json").json()
    assert [r["hardware"] for r in data["rungs"]] == ["1xH100-80GB", "8xA100-80GB", "8xH200-141GB"]
    assert [r["source"] for r in data["rungs"]] == ["committed", "committed", "committed"]


def test_a_wrong_number_of_gpus_or_bad_epochs_is_one_line(manifest, cli):
    res = cli("ladder", "--corpus", manifest, "-g", "1xH100-80GB", "-g", "8xA100-80GB")
    assert res.code == 2 and "once" in res.err and "Traceback" not in res.err
    res = cli("ladder", "--corpus", manifest, "--epochs", "0")
    assert res.code == 2 and "--epochs" in res.err
    res = cli("ladder", "--corpus", manifest.parent / "nope")
    assert res.code == 2 and "not found" in res.err


def test_the_human_table_names_the_gates(manifest, cli):
    res = cli("ladder", "--corpus", manifest)
    assert res.code == 0
    assert "gate before 70B (profile release)" in res.out and "if marginal, stop here" in res.out
    assert "100,000 training tokens per epoch" in res.out


def test_a_missing_committed_recipe_is_a_clear_error(manifest):
    from llamaforge.corpus.manifest import load_manifest

    tokens = corpus_tokens(load_manifest(manifest, verify="none"))
    with pytest.raises(UserError, match="llamaforge render"):
        build_ladder(tokens, [])
