"""Fixtures of the export tests: a launch folder (the working directory) holding a run folder."""

from __future__ import annotations

import pytest

from .run_folder import make_run, write_base_config


@pytest.fixture
def launch(tmp_path, monkeypatch):
    """A fresh launch folder as the working directory, with the tiny base's config.json in build/model."""
    monkeypatch.chdir(tmp_path)
    write_base_config(tmp_path / "build/model")
    return tmp_path


@pytest.fixture
def run(launch):
    """A healthy, gated run folder with a rank-32 adapter: runs/leviathan-tiny."""
    return make_run(launch)


@pytest.fixture
def no_hub_token(monkeypatch, tmp_path):
    """No Hugging Face token anywhere: environment cleared, the token cache pointed at an empty file path."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"), raising=False)
