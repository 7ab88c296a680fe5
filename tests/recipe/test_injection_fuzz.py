"""Fuzz of every user-named value that reaches a generated script or YAML file: the `cp` destination,
the `render -o` folder, the `run --name`, a specialist's role and categories, a persona's system
prompt and a run's name in an export. Each value carries shell metacharacters, quotes, `$(...)`,
backticks, redirections, spaces or YAML-significant characters. For every generated file:

- YAML parses back to exactly the value (and no key appears that the template did not write);
- every shell script passes `bash -n` and is then RUN in a sandbox whose `accelerate`, `vllm`,
  `srun` and `scontrol` are stand-ins that record their arguments: the arguments are exactly the
  paths and names given, and no payload (`touch PWNED`, `>PWNED`) ever creates its marker file;
- the launch commands written in comments split (shlex) back to the same paths.

Values with a line break or another control character are refused on one line where they name a
file or a run, and folded to one line (or quoted) where they are free text."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llamaforge.recipe.registry import read_header

PAYLOADS = [
    'my $(touch PWNED) "x"', "back`touch PWNED`tick", "semi; touch PWNED", "amp && touch PWNED #",
    "pipe | touch PWNED", "redir>PWNED", "it's", 'dq"uote', "sp ace", "dollar$HOME${HOME}", "#hash",
    "key: value", "- dash", "[flow]", "{map: 1}", "&anchor", "*alias", "!tag", "%percent", "@at", "|pipe",
    ">fold", "yes", "null", "1e3", "~", "back\\slash", "ünïcödé", "--opt", "glob*?[a]",
    "'; touch PWNED; echo '", '"; touch PWNED; echo "',
]
LINE_BREAKS = ["new\nline: injected", "cr\rreturn", "nel\x85x", "tab\there"]   # and other control characters
REPO_2NODE = "llama-3.1-405b/lora-8xH100-80GB-2nodes"


# ---- the sandbox -------------------------------------------------------------------------------

FAKE_RECORDER = """#!{python}
import json, os, sys
with open(os.environ["FAKE_RECORD"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
"""
FAKE_SRUN = '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n'
FAKE_SCONTROL = "#!/bin/bash\necho node0\n"


class Sandbox:
    """A folder with stand-in commands first on PATH; `run(script)` executes a script there and
    returns the argument lists the stand-ins recorded."""

    def __init__(self, root: Path):
        self.root = root
        self.bin = root / ".fake-bin"
        self.bin.mkdir(parents=True)
        for name, text in (("accelerate", FAKE_RECORDER.format(python=sys.executable)),
                           ("vllm", FAKE_RECORDER.format(python=sys.executable)),
                           ("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.record = root / ".fake-record.jsonl"

    def run(self, script: Path, *, cwd: Path | None = None, env: dict | None = None) -> list[list[str]]:
        script = Path(script).resolve()
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.record.unlink(missing_ok=True)
        full_env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.root), "FAKE_RECORD": str(self.record),
                    "SLURM_JOB_NODELIST": "node0", "SLURM_NODEID": "0", **(env or {})}
        proc = subprocess.run(["bash", str(script)], cwd=cwd or self.root, env=full_env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        self.assert_inert()
        return [json.loads(line) for line in self.record.read_text().splitlines()] if self.record.exists() else []

    def assert_inert(self) -> None:
        markers = [p for p in self.root.rglob("*") if p.name == "PWNED"]
        assert not markers, f"a payload ran: {markers}"


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> Sandbox:
    monkeypatch.chdir(tmp_path)
    return Sandbox(tmp_path)


def comment_commands(text: str, program: str) -> list[list[str]]:
    """The commands written in `#` comment lines that start with `program`, split as a shell would."""
    out = []
    for line in text.splitlines():
        body = line.lstrip("#").strip()
        if line.startswith("#") and body.startswith(program + " "):
            out.append(shlex.split(body.removeprefix("or on each node i = 0..1: ")))
        elif line.startswith("#") and f": {program} " in body:
            out.append(shlex.split(body.split(": ", 1)[1]))
    return out


def one_line_refusal(res, *words) -> None:
    assert res.code == 2, (res.code, res.out, res.err)
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.err and lines[0].startswith("error:"), res.err
    for w in words:
        assert w in lines[0]


def committed(recipe_id: str) -> dict:
    from llamaforge.paths import recipes_dir

    return yaml.safe_load((recipes_dir() / f"{recipe_id}.yaml").read_text())


# ---- cp ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", PAYLOADS)
def test_cp_destination_stays_inert_in_the_recipe_and_the_slurm_script(cli, sandbox, value):
    dest = f"{value}.yaml"
    res = cli("cp", REPO_2NODE, f"./{dest}")
    assert res.code == 0, res.err
    written = dest if not dest.startswith("-") else f"./{dest}"
    text = Path(dest).read_text()
    recipe = yaml.safe_load(text)
    original = committed(REPO_2NODE)
    assert set(recipe) == set(original) and recipe["deepspeed"] == Path(original["deepspeed"]).name
    assert Path(recipe["deepspeed"]).is_file()
    assert {k: v for k, v in read_header(text).items() if k in ("model", "hardware", "method")} == {
        "model": "llama-3.1-405b", "hardware": "8xH100-80GB-2nodes", "method": "lora"}
    launches = comment_commands(text, "accelerate")
    assert launches and all(cmd[-1] == written for cmd in launches)
    assert [c for c in comment_commands(text, "llamaforge") if c[1] == "check"] == [["llamaforge", "check", written]]
    calls = sandbox.run(Path("lora-8xH100-80GB-2nodes.sbatch"))
    assert len(calls) == 1 and calls[0][0] == "accelerate" and calls[0][-1] == written
    assert calls[0][calls[0].index("--config_file") + 1] == "2nodes-8gpu.yaml"


@pytest.mark.parametrize("value", LINE_BREAKS)
def test_cp_refuses_a_destination_with_a_line_break(cli, sandbox, value):
    one_line_refusal(cli("cp", REPO_2NODE, f"{value}.yaml"), "line break")
    assert not [p for p in sandbox.root.iterdir() if not p.name.startswith(".fake")]


# ---- render -o ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", PAYLOADS)
def test_render_output_folder_stays_inert(cli, sandbox, value):
    request = ("render", "--model", "llama-3.1-405b", "--gpus", "8xH100-80GB", "--nodes", "2")
    assert cli(*request, "-o", "plain").code == 0
    res = cli(*request, f"--output={value}")
    assert res.code == 0, res.err
    base = value if not value.startswith("-") else f"./{value}"
    recipe_path = f"{base}/lora-8xH100-80GB-2nodes.yaml"
    text = Path(recipe_path).read_text()
    recipe = yaml.safe_load(text)
    plain = yaml.safe_load(Path("plain/lora-8xH100-80GB-2nodes.yaml").read_text())
    expected = {k: (f"{base}/{v.removeprefix('plain/')}" if isinstance(v, str) and v.startswith("plain/") else v)
                for k, v in plain.items()}
    assert recipe == expected                      # every value exact, no key added or lost
    assert Path(recipe["deepspeed"]).is_file()
    assert all(cmd[-1] == recipe_path for cmd in comment_commands(text, "accelerate"))
    assert [c for c in comment_commands(text, "llamaforge") if c[1] == "check"] == [["llamaforge", "check", recipe_path]]
    regenerate = next(line for line in text.splitlines() if line.startswith("# Regenerate:"))
    args = shlex.split(regenerate.removeprefix("# Regenerate:"))
    assert args[args.index("-o") + 1] == base
    accelerate_path = f"{base}/accelerate/2nodes-8gpu.yaml"
    accel_text = Path(accelerate_path).read_text()
    assert yaml.safe_load(accel_text)["num_machines"] == 2
    used_as = shlex.split(next(line for line in accel_text.splitlines() if line.startswith("# Used as:"))[10:])
    assert used_as[used_as.index("--config_file") + 1] == accelerate_path
    calls = sandbox.run(Path(base) / "lora-8xH100-80GB-2nodes.sbatch")
    assert calls[0][-1] == recipe_path and calls[0][calls[0].index("--config_file") + 1] == accelerate_path


@pytest.mark.parametrize("value", LINE_BREAKS)
def test_render_refuses_an_output_folder_with_a_line_break(cli, sandbox, value):
    one_line_refusal(cli("render", "--model", "llama-3.1-8b", "--gpus", "1xH100-80GB", "-o", value), "line break")


# ---- run --name (the SLURM copy of a multi-node stage) ------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from llamaforge.corpus.build import BuildOptions, build_corpus
    from llamaforge.paths import datasets_dir

    root = tmp_path_factory.mktemp("fuzz-corpus")
    return build_corpus(datasets_dir() / "demo.yaml", BuildOptions(workers=1), cwd=root).out_dir


@pytest.mark.parametrize("value", [p for p in PAYLOADS if p not in ("--opt",)])
def test_run_name_stays_inert_in_the_stage_recipe_and_its_slurm_script(cli, sandbox, corpus, value):
    assert cli("cp", REPO_2NODE, "r.yaml").code == 0
    res = cli("run", "r.yaml", "--stage", "validate", "--corpus", corpus, "--name", value)
    assert res.code == 0, res.err
    stage = Path("runs") / value / "validate"
    config = yaml.safe_load((stage / "stage.yaml").read_text())
    assert config["output_dir"] == str(stage / "out")
    calls = sandbox.run(stage / "launch.sbatch")
    assert calls[0][-1] == str(stage / "stage.yaml")


@pytest.mark.parametrize("value", LINE_BREAKS + ["a/b", "..", "--opt"])
def test_run_refuses_a_name_that_is_not_one_plain_line(cli, sandbox, corpus, value):
    assert cli("cp", REPO_2NODE, "r.yaml").code == 0
    res = cli("run", "r.yaml", "--stage", "validate", "--corpus", corpus, f"--name={value}")
    if value == "--opt":     # a plain name that looks like an option: accepted, and the run folder is runs/--opt
        assert res.code == 0, res.err
        return
    one_line_refusal(res, "--name")
    assert not Path("runs").exists()


# ---- specialists: role and categories -------------------------------------------------------------


def test_specialist_roles_and_categories_stay_inert(sandbox):
    from llamaforge.recipe.specialists import render_specialists, specialists_from_dict

    values = PAYLOADS + LINE_BREAKS
    data = {"name": "nyx", "corpus": "shared.yaml",
            "base": {"model": "llama-3.1-70b", "gpus": "8xH100-80GB", "method": "lora", "seq_len": 4096},
            "specialists": [{"name": f"s{i}", "role": v, "categories": [v, "plain"], "lora_r": 8}
                            for i, v in enumerate(values)]}
    shared = {"name": "shared", "sources": [{"path": "x.jsonl", "category_field": "_category"}]}
    sset = specialists_from_dict(data, origin="spec.yaml", corpus="shared.yaml")
    files, recipes = render_specialists(sset, shared)
    by_path = {f.path: f.content for f in files}
    for i, v in enumerate(values):
        text = by_path[f"recipes/llama-3.1-70b/nyx/s{i}.corpus.yaml"]
        data_out = yaml.safe_load(text)
        assert set(data_out) == {"extends", "name", "keep_categories"}, v
        assert v in data_out["keep_categories"] and data_out["name"] == f"shared-s{i}"
        recipe = next(r for r in recipes if r.name.startswith(f"nyx-s{i}-"))
        header = read_header(recipe.files[0].content)
        assert header["specialist"] == f"nyx/s{i}" and yaml.safe_load(recipe.files[0].content)["lora_r"] == 8
    serve = sandbox.root / "serve_vllm.sh"
    serve.write_text(by_path["recipes/llama-3.1-70b/nyx/serve_vllm.sh"])
    env = {}
    for i, _ in enumerate(values):
        folder = sandbox.root / f"adapter {i} $(touch PWNED)"
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}")
        env[f"S{i}_ADAPTER"] = str(folder)
    calls = sandbox.run(serve, env=env)
    args = calls[0]
    modules = args[args.index("--lora-modules") + 1: args.index("--port")]
    assert modules == [f"s{i}={env[f'S{i}_ADAPTER']}" for i in range(len(values))]


# ---- export: persona system prompt and run name ---------------------------------------------------


@pytest.mark.parametrize("value", PAYLOADS + LINE_BREAKS)
def test_export_serving_files_stay_inert(cli, sandbox, value):
    from export.run_folder import make_run, write_base_config
    from export.test_export_serving import read_modelfile

    write_base_config(sandbox.root / "build/model")
    name = value if not any(c in value for c in "\n\r\x85/") else "run"
    run = make_run(sandbox.root, name=name, manifest_kwargs={"system_prompt": f"You are {value}."})
    res = cli("export", run, "--vllm", "--ollama")
    assert res.code == 0, res.err
    out = run / "export"
    card = (out / "README.md").read_text()
    assert isinstance(yaml.safe_load(card.split("---")[1]), dict)
    text = (out / "Modelfile").read_bytes().decode("utf-8")
    if "\r" in value:    # the reader below splits lines on \r too; Ollama keeps it inside """..."""
        assert f'SYSTEM """You are {value}."""' in text
    else:
        assert dict(read_modelfile(text))["SYSTEM"] == f"You are {value}."
    calls = sandbox.run(out / "serve_vllm.sh", cwd=out)
    args = calls[0]
    assert args[:3] == ["vllm", "serve", str((sandbox.root / "build/model").resolve())]
    served = args[args.index("--served-model-name") + 1]
    assert served.endswith("-base") and all(c.isalnum() or c in "._-" for c in served)
    assert args[args.index("--lora-modules") + 1] == f"{served.removesuffix('-base')}={out.resolve()}/adapter"
