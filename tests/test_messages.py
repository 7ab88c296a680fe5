"""The messages a user reads: never cut mid-word, "not found" apart from "is a folder", a model
folder without config.json said as such, no "use 8 or 8" or "slower: N vs N", a did-you-mean for a
misspelled required key, render advice that does not loop (--prune removes the strays it reports),
recipe ids printed whole in `ls` and `render` at any terminal width, and `render -o` refusing to
overwrite a recipe the user edited (unless --force)."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from llamaforge.errors import UserError, clip, exception_line

# ---- clipping ----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [10, 25, 40, 77, 200])
def test_clip_never_cuts_a_word(limit):
    text = "the dataset is not available offline; try again with network access or a local path " * 3
    out = clip(text, limit)
    assert len(out) <= limit
    if out != " ".join(text.split()):
        assert out.endswith("…")
        assert text.startswith(out[:-1].rstrip(" ,;:")) and text[len(out[:-1].rstrip(" ,;:"))] in " ;,:"
    assert clip("short\n  text", 50) == "short text"


def test_exception_line_is_the_first_line_clipped():
    assert exception_line(ValueError("first line\nsecond line")) == "first line"
    assert exception_line(KeyError()) == "KeyError"
    long = exception_line(OSError("word " * 100), 60)
    assert len(long) <= 60 and long.endswith("word…")


# ---- paths and models ----------------------------------------------------------------------------


def test_a_model_folder_without_config_json_is_said_so(tmp_path):
    from llamaforge.planning.catalog import get_model

    (tmp_path / "model").mkdir()
    with pytest.raises(UserError, match="has no config.json") as exc:
        get_model(str(tmp_path / "model"))
    assert "unknown model" not in str(exc.value)
    with pytest.raises(UserError, match="not found"):
        get_model(str(tmp_path / "nope/config.json"))
    with pytest.raises(UserError, match="not read from the Hub here.*did you mean llama-3.1-8b"):
        get_model("meta-llama/Llama-3.1-8B")


def test_a_folder_given_as_a_config_is_not_called_missing(tmp_path):
    from llamaforge.check.reader import read_config

    with pytest.raises(UserError, match="is a folder, not a config file"):
        read_config(tmp_path)
    with pytest.raises(UserError, match="no such config file"):
        read_config(tmp_path / "nope.yaml")


def test_a_misspelled_required_key_gets_a_did_you_mean(tmp_path):
    from llamaforge.corpus.spec import load_spec

    spec = tmp_path / "c.yaml"
    spec.write_text("nmae: c\nseed: 0\nsources:\n  - path: x.jsonl\n    category: general\n")
    with pytest.raises(UserError, match="name: is required; did you mean `name` instead of `nmae`"):
        load_spec(spec)


# ---- the planner's sentences -------------------------------------------------------------------------


def test_an_indivisible_global_batch_names_distinct_choices():
    from llamaforge.planning.catalog import get_model, parse_hardware
    from llamaforge.planning.plan import plan

    with pytest.raises(UserError) as exc:
        plan(get_model("llama-3.1-8b"), parse_hardware("8xH100-80GB"), global_batch=4)
    assert str(exc.value).endswith("use 8")
    with pytest.raises(UserError) as exc:
        plan(get_model("llama-3.1-8b"), parse_hardware("8xH100-80GB"), global_batch=12)
    assert str(exc.value).endswith("use 8 or 16")


@pytest.mark.parametrize("model, gpus", [("llama-3.1-8b", "8xH100-80GB"), ("llama-3.1-8b", "2xRTX3090-24GB"),
                                         ("llama-3.1-70b", "8xH100-80GB")])
def test_a_refused_alternative_is_never_slower_at_the_same_speed(model, gpus):
    from llamaforge.planning.catalog import get_model, parse_hardware
    from llamaforge.planning.plan import plan

    p = plan(get_model(model), parse_hardware(gpus))
    for r in p.rejected:
        m = re.search(r"slower: ([\d,]+) vs ([\d,]+)", r["why"])
        if m:
            assert m.group(1) != m.group(2), r
    assert any("at the same" in r["why"] for r in p.rejected)   # these three have ties


# ---- tables ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [40, 60, 80, 120, 200])
def test_ls_prints_every_recipe_id_whole(cli, monkeypatch, width):
    from llamaforge.cli import _common
    from llamaforge.recipe.registry import list_recipes

    monkeypatch.setattr(_common.console, "_width", width)
    res = cli("ls")
    assert res.code == 0
    lines = res.out.splitlines()
    for e in list_recipes():
        assert any(re.search(rf"(^|\s){re.escape(e.id)}(\s|$)", line) for line in lines), (width, e.id)


@pytest.mark.parametrize("width", [60, 80, 200])
def test_render_prints_the_recipe_path_whole(cli, tmp_path, monkeypatch, width):
    from llamaforge.cli import _common

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_common.console, "_width", width)
    res = cli("render", "--model", "llama-3.1-70b", "--gpus", "8xH100-80GB", "-o", "a-rather-long-folder-name/for-recipes")
    assert res.code == 0, res.err
    path = "a-rather-long-folder-name/for-recipes/lora-8xH100-80GB.yaml"
    assert any(re.search(rf"(^|\s){re.escape(path)}(\s|$)", line) for line in res.out.splitlines()), res.out


# ---- render -o: no silent overwrite ----------------------------------------------------------------


def test_render_o_refuses_to_overwrite_an_edited_recipe_without_force(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("render", "--model", "llama-3.1-8b", "--gpus", "1xH100-80GB", "-o", "mine")
    assert cli(*args).code == 0
    recipe = next((tmp_path / "mine").glob("*.yaml"))
    assert cli(*args).code == 0                                   # the same rendering again: nothing to lose
    edited = recipe.read_text().replace("\nseed: 42\n", "\nseed: 7\n")
    assert edited != recipe.read_text()
    recipe.write_text(edited)
    res = cli(*args)
    assert res.code == 2 and "--force" in res.err and recipe.name in res.err
    assert recipe.read_text() == edited                            # the user's edit survived
    assert cli(*args, "--force").code == 0
    assert recipe.read_text() != edited


# ---- render --check: parses what it renders, advice that does not loop -------------------------------


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    """A copy of the repository's templates, datasets and recipes as LLAMAFORGE_HOME."""
    from llamaforge import paths

    root = tmp_path / "repo"
    for part in ("templates", "datasets", "recipes"):
        shutil.copytree(paths.repo_root() / part, root / part)
    shutil.copy(paths.repo_root() / "pyproject.toml", root / "pyproject.toml")
    monkeypatch.setenv("LLAMAFORGE_HOME", str(root))
    monkeypatch.chdir(root)
    paths.repo_root.cache_clear()
    from llamaforge.recipe import templating

    templating.jinja_environment.cache_clear()
    yield root
    paths.repo_root.cache_clear()
    templating.jinja_environment.cache_clear()


def test_a_stray_file_is_reported_and_pruned_not_looped_over(cli, repo_copy):
    assert cli("render", "--check").code == 0
    stray = repo_copy / "recipes/llama-3.1-8b/old-recipe.yaml"
    stray.write_text("base_model: x\n")
    res = cli("render", "--check")
    assert res.code == 1 and "not produced by the matrix" in res.err and "llamaforge render --prune" in res.err
    res = cli("render")                                           # plain render keeps it, and says how to remove it
    assert res.code == 0 and stray.exists() and "--prune" in res.err
    assert cli("render", "--check").code == 1
    res = cli("render", "--prune")
    assert res.code == 0 and not stray.exists() and "removed recipes/llama-3.1-8b/old-recipe.yaml" in res.out
    assert cli("render", "--check").code == 0


def test_render_check_parses_every_file_it_renders(repo_copy):
    from llamaforge.recipe.request import RenderedFile
    from llamaforge.recipe.matrix import check_files_parse, compare_with_disk, write_files

    bad = [RenderedFile("recipes/x/bad.yaml", "a: 1\n  b: 2\n- c\n"),
           RenderedFile("recipes/x/bad.json", '{"a": }'),
           RenderedFile("recipes/x/bad.sbatch", "#!/bin/bash\nif then fi\n"),
           RenderedFile("recipes/x/fine.yaml", "a: 1\n")]
    for f in bad:
        (repo_copy / f.path).parent.mkdir(parents=True, exist_ok=True)
        (repo_copy / f.path).write_text(f.content)
    drift = compare_with_disk(bad, repo_copy, scope=None)
    assert [u.split(" ")[0] for u in drift.unparsable] == ["recipes/x/bad.yaml", "recipes/x/bad.json", "recipes/x/bad.sbatch"]
    assert not drift.clean
    with pytest.raises(UserError, match="recipes/x/bad.yaml: the rendered file does not parse"):
        check_files_parse(bad)
    with pytest.raises(UserError):
        write_files([bad[3], bad[0]], repo_copy / "out")
    assert not (repo_copy / "out").exists()                       # nothing written when one file fails


def test_a_two_line_role_renders_a_valid_slice_and_injects_no_key():
    from llamaforge.recipe.specialists import render_specialists, specialists_from_dict

    data = {"name": "nyx", "corpus": "shared.yaml",
            "base": {"model": "llama-3.1-70b", "gpus": "8xH100-80GB", "method": "lora", "seq_len": 4096},
            "specialists": [{"name": "mnemosyne", "role": "memory and\nqc: {drop: [cliche]}\n", "categories": ["memory"]}]}
    shared = {"name": "shared", "sources": [{"path": "x.jsonl", "category_field": "_category"}]}
    files, _ = render_specialists(specialists_from_dict(data, origin="s.yaml", corpus="shared.yaml"), shared)
    text = next(f.content for f in files if f.path.endswith("mnemosyne.corpus.yaml"))
    assert set(yaml.safe_load(text)) == {"extends", "name", "keep_categories"}   # no `qc:` key
    assert "(memory and qc: {drop: [cliche]})" in text.splitlines()[0]
