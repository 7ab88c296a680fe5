"""The mix (pure): how many train rows each category gets.

Each category has `available` rows for training (distinct rows left after dedup, QC and the eval
hold-out). Its target is:
  count: N     exactly N rows (fewer: down-sampled; more: the rows repeat, marked `_repeat`)
  share: s     s of the train split
  weight: w    w times its available rows
  (nothing)    all its available rows
`general_share` is the share of the general categories together (split between them in proportion
to their available rows). With shares, the train size T solves T = fixed + shares*T; when every
category has a share, T is `total` or the largest size that needs no repeats. `total` otherwise
fixes T: shares take their part of it and the categories without a share are scaled to fill it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class MixResult:
    targets: dict[str, int]
    train_total: int
    warnings: tuple[str, ...]


def _round_shares(total: float, shares: dict[str, float]) -> dict[str, int]:
    return {c: int(round(s * total)) for c, s in shares.items()}


def resolve_targets(available: dict[str, int], mix, general_advice: tuple[float, float] | None = None) -> MixResult:
    """Target train rows per category (pure). `mix` is a spec MixSpec."""
    warnings: list[str] = []
    shares: dict[str, float] = {}
    fixed: dict[str, int] = {}
    scalable: dict[str, int] = {}
    for cat, n in available.items():
        rule = mix.categories.get(cat)
        if rule is None or all(v is None for v in (rule.count, rule.share, rule.weight)):
            if mix.general_share is None or cat not in mix.general_categories:
                scalable[cat] = n
        elif rule.count is not None:
            fixed[cat] = rule.count
        elif rule.share is not None:
            shares[cat] = rule.share
        else:
            scalable[cat] = int(round(rule.weight * n))
    for cat, rule in mix.categories.items():
        if cat not in available and (rule.count or rule.share):
            warnings.append(f"mix: category {cat!r} has no rows, so its target cannot be met")
    if mix.general_share is not None:
        general = {c: available[c] for c in mix.general_categories if c in available}
        total_general = sum(general.values())
        if total_general == 0:
            warnings.append(f"mix.general_share is set but no rows are in {', '.join(mix.general_categories)}")
        else:
            for cat, n in general.items():
                shares[cat] = mix.general_share * n / total_general
    share_sum = sum(shares.values())
    others = sum(fixed.values()) + sum(scalable.values())
    if mix.total is not None:
        total = mix.total
        room = total - sum(fixed.values()) - share_sum * total
        if room < -0.5:
            raise UserError(f"mix.total {total} is smaller than the counts and shares it must hold; raise it")
        natural = sum(scalable.values())
        if natural:
            scalable = {c: int(round(n * room / natural)) for c, n in scalable.items()}
        elif room > 0.5 and shares:
            # No category to fill the room: the shares grow in proportion.
            shares = {c: s / share_sum * (1 - sum(fixed.values()) / total) for c, s in shares.items()}
    elif shares and others == 0:
        usable = {c: available[c] / s for c, s in shares.items() if s > 0}
        total = min(usable.values()) / share_sum if usable else 0
    elif shares:
        if share_sum >= 1 - 1e-9:
            raise UserError(f"mix shares add up to {share_sum:.3g} but categories "
                            f"{', '.join(sorted(set(fixed) | set(scalable)))} have none; lower the shares")
        total = others / (1 - share_sum)
    else:
        total = others
    targets = {**fixed, **scalable, **_round_shares(total, shares)}
    targets = {c: targets.get(c, 0) for c in available}
    train_total = sum(targets.values())
    if general_advice and train_total and any(c in available for c in mix.general_categories):
        real = sum(targets.get(c, 0) for c in mix.general_categories) / train_total
        lo, hi = general_advice
        if not lo <= real <= hi:
            warnings.append(f"general instruction data is {real:.0%} of the train split; the advice is "
                            f"{lo:.0%}-{hi:.0%} to keep general skills")
    return MixResult(targets=targets, train_total=train_total, warnings=tuple(warnings))


def general_share_of(targets: dict[str, int], general_categories) -> float | None:
    total = sum(targets.values())
    if not total:
        return None
    return sum(targets.get(c, 0) for c in general_categories) / total
