"""Teacher-model elicitation: render the templates of templates/elicit/ for a file of passages into
OpenAI Batch API requests (`corpus elicit`), and turn the batch's answers back into an ordinary
`messages` source (`corpus collect`). Bad passages and bad answers never disappear: each goes to a
`.rejected.jsonl` file next to the output with its line and reason."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..errors import UserError, clip, require_one_line
from ..files import JSON_SAFE_INT, check_file_to_write, check_input_file, same_file, write_bytes_atomic
from ..paths import templates_dir
from .normalize import RowProblem, normalize_row
from .qc import load_phrase_lists
from .readers import BOM, excerpt, utf8_problem

BATCH_URL = "/v1/chat/completions"
SYSTEM_PROMPT = ("You write training examples for fine-tuning a language model. Follow the template exactly and "
                 "answer with one JSON object.")
_DOC = re.compile(r"\{#-?\s*(.*?)\s*-?#\}", re.S)


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    title: str
    use_when: str
    path: str


def elicit_dir() -> Path:
    return templates_dir() / "elicit"


def list_templates() -> list[TemplateInfo]:
    out = []
    for path in sorted(elicit_dir().glob("*.j2")):
        if path.name.startswith("_"):
            continue
        doc = _DOC.match(path.read_text(encoding="utf-8"))
        text = " ".join(doc.group(1).split()) if doc else ""
        title, _, rest = text.partition(".")
        out.append(TemplateInfo(path.stem, title.strip(), rest.strip(), str(path)))
    return out


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(str(elicit_dir())), undefined=StrictUndefined,
                       keep_trailing_newline=True, autoescape=False)


def render_prompt(template: str, passage: str, *, work: str | None = None, persona: str | None = None,
                  cliches: tuple[str, ...] | None = None) -> str:
    """The teacher prompt of one passage."""
    names = [t.name for t in list_templates()]
    if template not in names:
        raise UserError(f"unknown elicitation template {template!r}; choose one of {', '.join(names)}")
    if cliches is None:
        lists = load_phrase_lists()
        cliches = lists["cliches"] + lists["persona_breaks"]
    tpl = _environment().get_template(f"{template}.j2")
    return tpl.render(passage=passage.strip("\n"), work=work, persona=persona, cliches=list(cliches)).strip() + "\n"


@dataclass
class ElicitResult:
    out: Path
    requests: int
    rejected: int
    rejected_path: Path | None


def _jsonl_rows(path: Path, what: str):
    """(line, object or (reason, detail), raw) for each non-blank line of a JSONL file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found; give the path of a JSONL file") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; give the path of a JSONL {what}") from None
    if data.startswith(BOM):
        data = data[len(BOM):]
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            yield i, orjson.loads(raw), raw
        except orjson.JSONDecodeError as exc:
            problem = utf8_problem(raw)
            yield i, ("invalid_utf8" if problem else "invalid_json", problem or str(exc)), raw


def elicit_requests(passages: str | Path, template: str, out: str | Path | None = None, *, model: str = "gpt-4o",
                    max_tokens: int = 1500, temperature: float = 0.8, persona: str | None = None) -> ElicitResult:
    """Write one OpenAI Batch API request per good passage. A passage row is
    {"passage" or "text": str, "id": str (optional), "work": str (optional)}."""
    passages = check_input_file(passages, "passages file")
    out = Path(out) if out else passages.with_name(f"{passages.stem}.{template}.batch.jsonl")
    check_output(out, passages, "-o")
    if not model.strip() or any(c.isspace() for c in model):
        raise UserError(f"--model {model!r}: give the teacher model's name (e.g. gpt-4o)")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= JSON_SAFE_INT:
        raise UserError(f"--max-tokens {max_tokens}: give a positive number of tokens (e.g. 1500)")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and 0 <= temperature <= 2):
        raise UserError(f"--temperature {temperature}: give a number from 0 to 2 (the Batch API's range), e.g. 0.8")
    if persona is not None:
        require_one_line(persona, "--persona")
    render_prompt(template, "probe", persona=persona)  # unknown template: UserError before any work
    lists = load_phrase_lists()
    cliches = lists["cliches"] + lists["persona_breaks"]
    lines, rejected, seen = [], [], set()
    for line, obj, raw in _jsonl_rows(passages, "passages file"):
        if isinstance(obj, tuple):
            rejected.append({"line": line, "reason": obj[0], "detail": obj[1], "text": excerpt(raw)})
            continue
        problem = _passage_problem(obj)
        if problem:
            rejected.append({"line": line, "reason": problem[0], "detail": problem[1], "text": excerpt(raw)})
            continue
        text = obj.get("passage", obj.get("text"))
        pid = obj.get("id") or f"line{line}"
        custom_id = f"{template}:{pid}"
        if custom_id in seen:
            custom_id = f"{custom_id}:{hashlib.sha256(text.encode()).hexdigest()[:8]}"
        seen.add(custom_id)
        prompt = render_prompt(template, text, work=obj.get("work"), persona=persona, cliches=cliches)
        lines.append(orjson.dumps({
            "custom_id": custom_id, "method": "POST", "url": BATCH_URL,
            "body": {"model": model, "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                                  {"role": "user", "content": prompt}],
                     "max_tokens": max_tokens, "temperature": temperature,
                     "response_format": {"type": "json_object"}},
        }))
    write_bytes_atomic(out, b"".join(x + b"\n" for x in lines))
    rejected_path = _write_rejected(out, rejected)
    return ElicitResult(out=out, requests=len(lines), rejected=len(rejected), rejected_path=rejected_path)


def check_output(out: Path, source: Path, option: str) -> None:
    """An output file (and its .rejected.jsonl beside it) that can be written and is not the input."""
    check_file_to_write(out, option)
    for path in (out, rejected_path_of(out)):
        if same_file(path, source):
            raise UserError(f"{option} {out} would overwrite the input {source}; give another output file")


def _passage_problem(obj) -> tuple[str, str] | None:
    if not isinstance(obj, dict):
        return "not_an_object", "a passage row must be an object"
    key = "passage" if "passage" in obj else "text" if "text" in obj else None
    if key is None:
        return "missing_field", "no 'passage' (or 'text') field"
    if not isinstance(obj[key], str):
        return "wrong_type", f"{key!r} must be text"
    if not obj[key].strip():
        return "empty_message", f"{key!r} is empty"
    for opt in ("id", "work"):
        if opt in obj and obj[opt] is not None and not isinstance(obj[opt], str):
            return "wrong_type", f"{opt!r} must be text"
    return None


def rejected_path_of(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".jsonl") + ".rejected.jsonl")


def _write_rejected(out: Path, rejected: list[dict]) -> Path | None:
    path = rejected_path_of(out)
    if not rejected:
        path.unlink(missing_ok=True)
        return None
    write_bytes_atomic(path, b"".join(orjson.dumps(r) + b"\n" for r in rejected))
    return path


@dataclass
class CollectResult:
    out: Path
    rows: int
    rejected: int
    rejected_path: Path | None


def collect_answers(results: str | Path, out: str | Path, *, category: str | None = None) -> CollectResult:
    """Turn an OpenAI Batch API output file into a `messages` JSONL source: one row per answer whose
    content is a JSON object with a valid conversation ({"messages": [...]} ending with the
    assistant's turn). Each row keeps its custom_id (and template) under `_elicit`."""
    results, out = check_input_file(results, "batch results file"), Path(out)
    check_output(out, results, "-o")
    if category is not None:
        require_one_line(category, "--category")
    rows, rejected = [], []
    for line, obj, raw in _jsonl_rows(results, "batch results file"):
        if isinstance(obj, tuple):
            rejected.append({"line": line, "reason": obj[0], "detail": obj[1], "text": excerpt(raw)})
            continue
        try:
            custom_id, messages = _answer_messages(obj)
        except RowProblem as p:
            rejected.append({"line": line, "custom_id": obj.get("custom_id") if isinstance(obj, dict) else None,
                             "reason": p.reason, "detail": p.detail, "text": excerpt(raw)})
            continue
        row = {"messages": messages}
        if category:
            row["_category"] = category
        row["_elicit"] = {"custom_id": custom_id, "template": custom_id.split(":", 1)[0]}
        rows.append(orjson.dumps(row))
    write_bytes_atomic(out, b"".join(x + b"\n" for x in rows))
    return CollectResult(out=out, rows=len(rows), rejected=len(rejected), rejected_path=_write_rejected(out, rejected))


def _answer_messages(obj) -> tuple[str, list[dict]]:
    if not isinstance(obj, dict):
        raise RowProblem("not_an_object", "a batch result line must be an object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str):
        raise RowProblem("missing_field", "no 'custom_id'")
    if obj.get("error"):
        raise RowProblem("teacher_error", f"the request failed: {clip(str(obj['error']))}")
    try:
        response = obj["response"]
        if response.get("status_code", 200) != 200:
            raise RowProblem("teacher_error", f"HTTP status {response.get('status_code')}")
        content = response["body"]["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError, AttributeError):
        raise RowProblem("missing_field", "no response.body.choices[0].message.content") from None
    if not isinstance(content, str):
        raise RowProblem("wrong_type", "the answer content is not text")
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RowProblem("invalid_json", f"the answer is not a JSON object ({exc})") from None
    if not isinstance(answer, dict) or "messages" not in answer:
        raise RowProblem("missing_field", "the answer has no 'messages'")
    return custom_id, normalize_row({"messages": answer["messages"]}, "messages")
