"""Fault injection for `llamaforge export`: it exports the weights inside the run folder it is given,
and only when they are the files that run recorded (sha256) when it ended. A copied run whose
original changed, a run whose config points elsewhere, a working directory holding other weights,
damaged copies (no weights, corrupt adapter_config.json, truncated or altered weights, a missing
tokenizer file), with and without --merge: the right weights or a one-line refusal, never another
run's adapter."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import yaml

from .run_folder import lora_shapes, make_run, write_safetensors
from .test_export_refusals import nothing_exported, refused

WEIGHTS = "full/out/adapter_model.safetensors"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exported_weights(run) -> str:
    return sha(run / "export/adapter/adapter_model.safetensors")


def change_weights(path) -> None:
    """Same shapes, other values: a retrained adapter."""
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"   # the last float becomes 1.0
    path.write_bytes(bytes(data))


def test_a_copied_run_exports_its_own_weights_after_the_original_changed(cli, launch):
    original = make_run(launch)
    copy = launch / "runs/v1-keep"
    shutil.copytree(original, copy)
    kept = sha(copy / WEIGHTS)
    change_weights(original / WEIGHTS)
    assert sha(original / WEIGHTS) != kept

    res = cli("export", copy)
    assert res.code == 0, res.err
    assert exported_weights(copy) == kept
    assert f"copying the adapter from {copy}/full/out" in res.err.replace("\n", "")
    report = json.loads((copy / "export/export_report.json").read_text())
    assert any("copied or moved" in w for w in report["warnings"])
    # the original's own export sees that its weights changed after its run, and refuses
    refused(cli("export", original), "adapter_model.safetensors", "not the file the run wrote")
    nothing_exported(original)


def test_a_copy_exports_without_the_original_and_from_another_working_directory(cli, launch, monkeypatch):
    original = make_run(launch)
    copy = launch / "elsewhere/v1-keep"
    shutil.copytree(original, copy)
    kept = sha(copy / WEIGHTS)
    shutil.rmtree(original)
    other = launch / "other-cwd"
    make_run(other, shapes=lora_shapes(32, layers=2))          # a run of the same name in the working directory
    change_weights(other / "runs/leviathan-tiny" / WEIGHTS)
    monkeypatch.chdir(other)
    res = cli("export", copy)
    assert res.code == 0, res.err
    assert exported_weights(copy) == kept


def test_a_recorded_output_dir_outside_the_run_folder_is_never_followed(cli, launch):
    """The stage config names another folder holding a valid adapter; the run's own out/ is gone."""
    decoy = make_run(launch, name="decoy")
    run = make_run(launch)
    stage_yaml = run / "full/stage.yaml"
    config = yaml.safe_load(stage_yaml.read_text())
    config["output_dir"] = str(decoy / "full/out")
    stage_yaml.write_text(yaml.safe_dump(config))
    shutil.rmtree(run / "full/out")
    refused(cli("export", run), "full/out not found")
    nothing_exported(run)


def truncate(run):
    path = run / WEIGHTS
    path.write_bytes(path.read_bytes()[:1000])


def corrupt_config(run):
    (run / "full/out/adapter_config.json").write_text('{"r": 32, "lora_alpha"')


def remove_weights(run):
    (run / WEIGHTS).unlink()


def remove_tokenizer_config(run):
    (run / "full/out/tokenizer_config.json").unlink()


def alter_weights(run):
    change_weights(run / WEIGHTS)


def replace_with_valid_weights_of_another_run(run):
    write_safetensors(run / WEIGHTS, {k: v for k, v in lora_shapes(32).items() if "layers.0." in k}
                      | {k: v for k, v in lora_shapes(32).items() if "layers.1." in k})
    change_weights(run / WEIGHTS)


def add_unrecorded_weights(run):
    write_safetensors(run / "full/out/adapter_model.bin", {"x": (1,)})


@pytest.mark.parametrize("damage, words", [
    (truncate, ["damaged", "adapter_model.safetensors", "1000-byte file"]),
    (corrupt_config, ["damaged", "adapter_config.json", "not readable JSON"]),
    (remove_weights, ["no adapter weights"]),
    (remove_tokenizer_config, ["tokenizer_config.json is missing (the run wrote it)"]),
    (alter_weights, ["adapter_model.safetensors is not the file the run wrote", "sha256"]),
    (replace_with_valid_weights_of_another_run, ["adapter_model.safetensors is not the file the run wrote"]),
    (add_unrecorded_weights, ["adapter_model.bin was not there when the run ended"]),
])
@pytest.mark.parametrize("merge", [False, True])
def test_a_damaged_or_changed_copy_is_refused_and_nothing_is_written(cli, launch, damage, words, merge):
    original = make_run(launch)
    copy = launch / "runs/v1-keep"
    shutil.copytree(original, copy)
    damage(copy)
    text = refused(cli("export", copy, *(["--merge"] if merge else [])), *words)
    assert "leviathan-tiny" not in text          # it never reaches for the original's weights
    nothing_exported(copy)


def test_a_report_without_the_output_record_is_refused(cli, launch):
    run = make_run(launch)
    report_path = run / "full/report.json"
    report = json.loads(report_path.read_text())
    del report["output"]
    report_path.write_text(json.dumps(report))
    refused(cli("export", run), "records no hashes", "rerun the full stage")
    nothing_exported(run)


def test_weights_that_change_while_they_are_copied_are_refused(cli, run, monkeypatch):
    """The hashes are checked on the export's own copies, so a change between the checks and the copy
    (or a bad copy) cannot slip through."""
    import llamaforge.export.runner as runner

    real_copy = shutil.copy2

    def copy_then_change(src, dst, *a, **k):
        real_copy(src, dst, *a, **k)
        if str(dst).endswith(".safetensors"):
            change_weights(type(run)(dst))

    monkeypatch.setattr(runner.shutil, "copy2", copy_then_change)
    res = cli("export", run)
    assert res.code == 2 and "Traceback" not in res.err
    last = res.err.strip().splitlines()[-1]     # after the progress line of the copy
    assert last.startswith("error: export refused") and "adapter_model.safetensors is not the file the run wrote" in last
    nothing_exported(run)
