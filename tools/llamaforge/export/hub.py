"""Upload an export folder to the Hugging Face Hub. The token comes only from the environment
(HF_TOKEN, or the token `hf auth login` cached): it is handed to huggingface_hub and never
written, printed or put in a message. Without a token, nothing is uploaded: the caller lists
what would be (`upload_listing`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, exception_line


@dataclass
class PushResult:
    repo_id: str
    dry_run: bool
    files: list[dict] = field(default_factory=list)    # [{"path", "bytes"}]
    total_bytes: int = 0
    url: str | None = None
    reason: str | None = None                          # why nothing was uploaded

    def to_dict(self) -> dict:
        return {"repo_id": self.repo_id, "dry_run": self.dry_run, "uploaded": not self.dry_run,
                "files": self.files, "total_bytes": self.total_bytes, "url": self.url, "reason": self.reason}


def hub_token() -> str | None:
    """The Hugging Face token from the environment or huggingface_hub's token cache, or None."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        return os.environ.get("HF_TOKEN") or None
    return get_token() or None


def upload_listing(folder: Path) -> list[dict]:
    """Every file under `folder` (relative POSIX path and size), in upload order."""
    folder = Path(folder)
    return [{"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file()]


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def push_folder(folder: Path, repo_id: str, *, private: bool = True) -> PushResult:
    """Create the repo (private unless asked otherwise; an existing one is kept) and upload
    `folder` to it. Without a token: a dry run listing the files."""
    files = upload_listing(folder)
    total = sum(f["bytes"] for f in files)
    token = hub_token()
    if not token:
        return PushResult(repo_id, True, files, total, reason="no Hugging Face token (set HF_TOKEN or run `hf auth login`)")
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError("--push needs huggingface_hub: pip install huggingface_hub") from None
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message="Upload export from llamaforge")
    except Exception as exc:  # noqa: BLE001 - any failure of the upload is reported on one line
        first = exception_line(exc)
        offline = " (HF_HUB_OFFLINE is set: unset it to upload)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        raise UserError(_scrub(f"upload to {repo_id} failed: {first}{offline}", token)) from None
    url = str(getattr(repo, "url", None) or f"https://huggingface.co/{repo_id}")
    return PushResult(repo_id, False, files, total, url=url)
