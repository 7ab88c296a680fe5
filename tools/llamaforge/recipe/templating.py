"""The Jinja environment the templates in templates/ render in, and its YAML-safe filters: `y` (a
scalar or flow collection that parses back to exactly the value), `c` (comment text), `sh` (a shell word).
Pure."""

from __future__ import annotations

import json
import re
import shlex
from functools import lru_cache

import yaml

from ..errors import LINE_BREAKS
from ..paths import templates_dir

# ---- the YAML-safe filters ------------------------------------------------------------------

# Strings a YAML reader other than stock PyYAML may take for a number: YAML 1.2's core schema reads
# `1e3`, `0o17` and `.5E2` as numbers, and some tools patch PyYAML's SafeLoader to do the same
# (mlx_lm.lora does, on import). Such strings are always written quoted, so that a category named
# `1e3` stays a string whoever reads the file.
NUMBER_LIKE = re.compile(r"""^(?:[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
                              |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)
                              |0o[0-7]+|0x[0-9a-fA-F]+)$""", re.X)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting NUMBER_LIKE strings as well as those its own resolver reads
    as another type."""

    def represent_str(self, data):
        if NUMBER_LIKE.match(data):
            return self.represent_scalar("tag:yaml.org,2002:str", data, style="'")
        return super().represent_str(data)


_Dumper.add_representer(str, _Dumper.represent_str)


def yaml_value(value) -> str:
    """A YAML scalar or flow collection that parses back to exactly `value`: plain when that is
    unambiguous, JSON (a subset of YAML flow syntax) otherwise. Names and paths therefore cannot
    start a new key, a comment or a document."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mant, exp = text.split("e")
            text = f"{mant}.0e{exp}"  # YAML 1.1 (PyYAML) reads 1e-05 as a string
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_value(str(k))}: {yaml_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if text and not LINE_BREAKS.search(text) and "#" not in text and ": " not in text and not NUMBER_LIKE.match(text):
        try:
            if yaml.safe_load(f"k: {text}") == {"k": text}:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text, ensure_ascii=True)


def dump_yaml(data, *, sort_keys: bool = False) -> str:
    """YAML text (block style, readable Unicode) that loads back to exactly `data`. PyYAML writes
    NEL (U+0085) raw when it allows Unicode, and a loader folds it into a space: data holding one is
    written with escapes instead."""
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=sort_keys, allow_unicode=True, width=100)
    if "\x85" in text:
        text = yaml.dump(data, Dumper=_Dumper, sort_keys=sort_keys, allow_unicode=False, width=100)
    return text


def comment_text(value) -> str:
    """Text safe inside a `#` comment: every YAML line break (\\n, \\r, NEL, LS, PS) and control
    character becomes a space, so a comment can never end early and start a key."""
    return LINE_BREAKS.sub(" ", str(value))


@lru_cache(maxsize=1)
def jinja_environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters["y"] = yaml_value
    env.filters["c"] = comment_text
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    return env


def render_template(template: str, /, **context) -> str:
    import jinja2

    try:
        text = jinja_environment().get_template(template).render(**context)
    except jinja2.UndefinedError as exc:  # a template/context mismatch is a bug, say which
        raise RuntimeError(f"template {template}: {exc}") from exc
    return text if text.endswith("\n") else text + "\n"
