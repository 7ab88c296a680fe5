"""--push: without a token, the exact list of what would be uploaded and exit 0; with one, the
export folder goes to HfApi.create_repo + upload_folder; the token is never printed or written,
not even when the upload fails with it in the error."""

from __future__ import annotations

import pytest

FAKE_TOKEN = "hf_FAKEtoken1234567890abcdefSECRET"


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records the calls, uploads nothing."""

    calls: list = []
    fail_with: str | None = None

    def __init__(self, token=None, **kwargs):
        RecordingHfApi.calls.append(("init", {"token_given": token is not None}))
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        RecordingHfApi.calls.append(("create_repo", repo_id, kwargs))

        class Url(str):
            url = f"https://huggingface.co/{repo_id}"
        return Url(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kwargs):
        if RecordingHfApi.fail_with:
            raise RuntimeError(RecordingHfApi.fail_with)
        RecordingHfApi.calls.append(("upload_folder", kwargs))


@pytest.fixture
def hf_api(monkeypatch):
    import huggingface_hub

    RecordingHfApi.calls = []
    RecordingHfApi.fail_with = None
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    return RecordingHfApi


def everything_written(folder):
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_without_a_token_it_lists_what_would_be_uploaded_and_exits_0(cli, run, no_hub_token, hf_api):
    res = cli("export", run, "--ollama", "--vllm", "--push", "me/leviathan-tiny")
    assert res.code == 0, res.err
    assert "no Hugging Face token" in res.out and "nothing uploaded" in res.out
    files = sorted(p.relative_to(run / "export").as_posix() for p in (run / "export").rglob("*") if p.is_file())
    assert len(files) == 7
    for path in files:
        assert path in res.out
    assert hf_api.calls == []                                     # no API object was even made

    data = cli("export", run, "--push", "me/leviathan-tiny", "--json").json()["push"]
    assert data["dry_run"] is True and data["uploaded"] is False
    assert {f["path"] for f in data["files"]} >= {"README.md", "export_report.json", "adapter/adapter_config.json"}
    assert data["total_bytes"] == sum(f["bytes"] for f in data["files"])


def test_with_a_token_it_uploads_the_folder_and_never_shows_the_token(cli, run, no_hub_token, hf_api, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    res = cli("export", run, "--vllm", "--push", "me/leviathan-tiny")
    assert res.code == 0, res.err
    kinds = [c[0] for c in hf_api.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]
    assert hf_api.calls[0][1]["token_given"]
    assert hf_api.calls[1][1] == "me/leviathan-tiny" and hf_api.calls[1][2]["private"] is True
    upload = hf_api.calls[2][1]
    assert upload["folder_path"] == str(run / "export") and upload["repo_id"] == "me/leviathan-tiny"
    assert "uploaded" in res.out and "https://huggingface.co/me/leviathan-tiny" in res.out
    assert FAKE_TOKEN not in res.out + res.err
    assert FAKE_TOKEN not in everything_written(run)

    res = cli("export", run, "--push", "me/leviathan-tiny", "--json")
    assert res.json()["push"]["uploaded"] is True
    assert FAKE_TOKEN not in res.out + res.err


def test_an_upload_error_quoting_the_token_is_scrubbed(cli, run, no_hub_token, hf_api, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    hf_api.fail_with = f"401 Unauthorized for token {FAKE_TOKEN}\nmore detail"
    res = cli("export", run, "--push", "me/leviathan-tiny")
    assert res.code == 2
    assert "upload to me/leviathan-tiny failed: 401 Unauthorized for token ***" in res.err
    assert FAKE_TOKEN not in res.out + res.err
    assert FAKE_TOKEN not in everything_written(run)


def test_the_cached_login_token_counts_as_a_token(cli, run, no_hub_token, hf_api, monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    token_file = tmp_path / "cached-token"
    token_file.write_text(FAKE_TOKEN)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    res = cli("export", run, "--push", "me/leviathan-tiny")
    assert res.code == 0 and [c[0] for c in hf_api.calls] == ["init", "create_repo", "upload_folder"]
    assert FAKE_TOKEN not in res.out + res.err
