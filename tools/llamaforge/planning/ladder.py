"""`llamaforge ladder`: the scaling ladder of seed 004 (8B -> 70B -> 405B by default, in
facts/ladder.yaml). Per rung: the recipe (the committed one for the rung's hardware, or the
planner's plan on the hardware given), the estimated hours and cost of training the corpus for
the given epochs, and the gate that must pass before climbing to the next rung.

hours = training tokens per epoch x epochs / the recipe's estimated tokens per second / 3600;
cost = hours x the hardware's $/hour (facts/gpus.yaml).

The training tokens come from the corpus manifest's length statistics (`corpus_tokens`): an
estimate, and an approximation where the manifest says its lengths are. Pure (the committed
recipes are passed in) except `load_ladder_facts`, which reads the facts file."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache


from ..errors import Infeasible, UserError
from ..paths import read_facts
from .catalog import Hardware, get_model, parse_hardware
from .plan import plan

LADDER_FACTS = "ladder.yaml"


# ---- the corpus's tokens -------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusTokens:
    tokens_per_epoch: int
    exact: bool                        # the manifest measured lengths with a tokenizer
    method: str                        # the manifest's description of how lengths were measured
    approximation: str                 # how this count was made, and what it leaves out
    per_category: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def corpus_tokens(manifest: dict) -> CorpusTokens:
    """Training tokens per epoch of a built corpus: for every category, its train rows (repeats
    from the mix included) x its mean row length in tokens, summed."""
    lengths = manifest.get("lengths") or {}
    counts = manifest.get("counts") or {}
    per_len = lengths.get("per_category") or {}
    per_count = counts.get("per_category") or {}
    total_mean = (lengths.get("total") or {}).get("mean")
    per_category: dict[str, int] = {}
    for name, c in sorted(per_count.items()):
        rows = int(c.get("train_rows") or 0)
        mean = (per_len.get(name) or {}).get("mean", total_mean)
        if rows and mean is None:
            raise UserError(f"corpus manifest has no token lengths for category {name!r}; rebuild the corpus")
        per_category[name] = int(round(rows * float(mean or 0)))
    tokens = sum(per_category.values())
    if not per_category:                # a manifest without per-category counts: the totals
        rows = int(counts.get("train_rows") or 0)
        if rows and total_mean is None:
            raise UserError("corpus manifest has no token lengths; rebuild the corpus")
        tokens = int(round(rows * float(total_mean or 0)))
    if tokens <= 0:
        raise UserError("the corpus has no training tokens (no train rows); build a corpus with data first")
    exact = bool(lengths.get("exact"))
    method = str(lengths.get("method") or "unknown")
    note = ("train rows per category (mix repeats included) x the category's mean row length; the means are over "
            "the kept rows (train and eval), measured " + ("exactly with the corpus's tokenizer" if exact else
                                                          "approximately (no tokenizer: characters per token)")
            + "; the rungs' Llama 3 tokenizer may count differently, rows longer than a recipe's sequence_len are "
              "dropped by Axolotl, and without sample packing padding adds compute")
    return CorpusTokens(tokens, exact, method, note, per_category)


# ---- the rungs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RungSpec:
    name: str
    model: str
    recipe: str                        # committed recipe id <model>/<name>
    methods: tuple[str, ...]
    seq_len: int
    lora_r: int
    question: str
    profile: str
    advance_if: str
    otherwise: str


@dataclass(frozen=True)
class LadderFacts:
    rungs: tuple[RungSpec, ...]
    epochs: float
    significant_gain: float


@lru_cache(maxsize=1)
def load_ladder_facts() -> LadderFacts:
    data = read_facts(LADDER_FACTS)
    gain = float(data["significant_gain"])
    rungs = []
    for r in data["rungs"]:
        gate = r["gate"]
        fill = {"gain_points": gain * 100}
        rungs.append(RungSpec(
            name=str(r["name"]), model=str(r["model"]), recipe=str(r["recipe"]),
            methods=tuple(r["methods"]), seq_len=int(r["seq_len"]), lora_r=int(r["lora_r"]),
            question=str(r["question"]), profile=str(gate["profile"]),
            advance_if=" ".join(str(gate["advance_if"]).format(**fill).split()),
            otherwise=" ".join(str(gate["otherwise"]).format(**fill).split()),
        ))
    return LadderFacts(tuple(rungs), float(data["epochs"]), gain)


# ---- the arithmetic ------------------------------------------------------------------------


def training_hours(tokens: int, epochs: float, tokens_per_s: float) -> float:
    """Hours to train `tokens` per epoch for `epochs` at `tokens_per_s`."""
    if tokens_per_s <= 0:
        raise ValueError("tokens_per_s must be > 0")
    return tokens * epochs / tokens_per_s / 3600.0


@dataclass
class RungResult:
    name: str
    model: str
    hardware: str
    source: str                  # committed | planner | does_not_fit
    recipe: str | None           # the committed recipe's path, or None for a plan
    method: str | None
    tokens_per_s: float | None
    usd_per_hour: float
    hours: float | None
    cost_usd: float | None
    smallest_hardware: str | None
    note: str
    question: str
    gate: dict

    @property
    def fits(self) -> bool:
        return self.source != "does_not_fit"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fits"] = self.fits
        return d


@dataclass
class Ladder:
    corpus: CorpusTokens
    epochs: float
    rungs: list[RungResult]

    @property
    def total_hours(self) -> float | None:
        return None if not all(r.fits for r in self.rungs) else sum(r.hours for r in self.rungs)

    @property
    def total_cost_usd(self) -> float | None:
        return None if not all(r.fits for r in self.rungs) else sum(r.cost_usd for r in self.rungs)

    def to_dict(self) -> dict:
        r2 = lambda x: None if x is None else round(x, 2)  # noqa: E731
        return {
            "corpus": self.corpus.to_dict(),
            "epochs": self.epochs,
            "rungs": [r.to_dict() for r in self.rungs],
            "total_if_every_rung_runs": {"hours": r2(self.total_hours), "cost_usd": r2(self.total_cost_usd)},
        }


def _gate(spec: RungSpec, is_last: bool) -> dict:
    return {"profile": spec.profile, "advance_if": spec.advance_if, "otherwise": spec.otherwise,
            "before": None if is_last else "the next rung"}


def _priced(spec: RungSpec, hw: Hardware, tokens: CorpusTokens, epochs: float, *, source: str, recipe: str | None,
            method: str, tokens_per_s: float, note: str, is_last: bool) -> RungResult:
    hours = training_hours(tokens.tokens_per_epoch, epochs, tokens_per_s)
    return RungResult(
        name=spec.name, model=spec.model, hardware=hw.label, source=source, recipe=recipe, method=method,
        tokens_per_s=tokens_per_s, usd_per_hour=hw.usd_per_hour, hours=hours, cost_usd=hours * hw.usd_per_hour,
        smallest_hardware=None, note=note, question=spec.question, gate=_gate(spec, is_last),
    )


def rung_result(spec: RungSpec, hardware: Hardware | None, tokens: CorpusTokens, epochs: float,
                committed: list, *, is_last: bool = False) -> RungResult:
    """One rung. `committed`: the committed recipes (recipe_registry.RecipeEntry). Without
    `hardware`, the rung's own committed recipe; with it, a committed recipe for that model and
    hardware when one exists, else the planner's fastest fitting plan (methods in the rung's
    order), else a rung that does not fit, with the smallest catalog hardware that would."""
    by_id = {e.id: e for e in committed}
    if hardware is None:
        entry = by_id.get(spec.recipe)
        if entry is None or not entry.tokens_per_s:
            raise UserError(f"committed recipe {spec.recipe} (facts/ladder.yaml) is missing or has no throughput "
                            "line; run `llamaforge render` or fix the rung's recipe")
        hw = parse_hardware(entry.hardware)
        return _priced(spec, hw, tokens, epochs, source="committed", recipe=entry.path, method=entry.method,
                       tokens_per_s=float(entry.tokens_per_s), note="the committed recipe's estimated throughput",
                       is_last=is_last)
    # the matrix's own recipe for the hardware, by name (<method>-<hw>): DPO recipes (dpo-*) and
    # specialists (<set>-<name>-*) on the same hardware are not the rung's training run
    canonical = (by_id.get(f"{spec.model}/{method}-{hardware.label}") for method in spec.methods)
    same = [e for e in canonical if e is not None and e.tokens_per_s]
    if same:
        e = same[0]
        return _priced(spec, hardware, tokens, epochs, source="committed", recipe=e.path, method=e.method,
                       tokens_per_s=float(e.tokens_per_s), note="the committed recipe for this hardware",
                       is_last=is_last)
    model = get_model(spec.model)
    last: Infeasible | None = None
    plans = []
    for method in spec.methods:
        try:
            plans.append(plan(model, hardware, method=method, seq_len=spec.seq_len, lora_r=spec.lora_r))
        except Infeasible as exc:
            last = exc
    # the first method that fits without CPU offload (offload slows every step), else the first that fits
    p = next((p for p in plans if p.setup.offload == "none"), plans[0] if plans else None)
    if p is not None:
        s = p.setup
        return _priced(spec, hardware, tokens, epochs, source="planner", recipe=None, method=s.method,
                       tokens_per_s=p.estimate.tokens_per_s, is_last=is_last,
                       note=(f"no committed recipe for {hardware.label}: the planner's plan ({s.parallel}, offload "
                             f"{s.offload}, micro-batch {s.micro_batch}); `llamaforge render --model {spec.model} "
                             f"--gpus {hardware.label} --method {s.method} --seq-len {spec.seq_len}` writes it"))
    smallest = last.suggestion if last else None
    return RungResult(
        name=spec.name, model=spec.model, hardware=hardware.label, source="does_not_fit", recipe=None, method=None,
        tokens_per_s=None, usd_per_hour=hardware.usd_per_hour, hours=None, cost_usd=None, smallest_hardware=smallest,
        note=(f"{spec.model} does not fit on {hardware.label} with {' or '.join(spec.methods)} at sequence "
              f"{spec.seq_len}" + (f"; the smallest catalog hardware that fits: {smallest}" if smallest else
                                   "; no catalog hardware fits")),
        question=spec.question, gate=_gate(spec, is_last),
    )


def build_ladder(tokens: CorpusTokens, committed: list, *, hardware: list[Hardware] | None = None,
                 epochs: float | None = None, facts: LadderFacts | None = None) -> Ladder:
    """The ladder for a corpus. `hardware`: none (each rung's committed recipe), one (for every
    rung) or one per rung, in order."""
    facts = facts or load_ladder_facts()
    epochs = facts.epochs if epochs is None else float(epochs)
    if not math.isfinite(epochs) or epochs <= 0:
        raise UserError("--epochs must be > 0")
    n = len(facts.rungs)
    hardware = list(hardware or [])
    if len(hardware) not in (0, 1, n):
        raise UserError(f"give --gpus once (for every rung) or {n} times (one per rung: "
                        f"{', '.join(r.name for r in facts.rungs)}), not {len(hardware)} times")
    per_rung = hardware * n if len(hardware) == 1 else hardware or [None] * n
    rungs = [rung_result(spec, hw, tokens, epochs, committed, is_last=i == n - 1)
             for i, (spec, hw) in enumerate(zip(facts.rungs, per_rung))]
    return Ladder(tokens, epochs, rungs)
