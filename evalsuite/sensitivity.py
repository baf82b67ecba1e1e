"""`evalsuite explain`: which layers cause a variant's loss, measured by restoring them, not guessed by proxy.

Layers are grouped (`by`: each layer, each decoder block, or each layer type such as every `down_proj`) and
ordered by the proxy the run already holds (each layer's output SQNR, lowest first). How they are measured:

- `"alone"`: each group restored on its own; its verdict is the share of the loss it recovers.
- `"bisect"` (the default): the same up to `bisect_above` groups. Past that the candidates are halved: the
  half that comes first in proxy order is restored; if it recovers at least `MOST` of the loss it becomes
  the candidates, else the other half is tried; when neither half does, the loss is spread and the
  remaining candidates are measured one by one.
- `"without"`: each group left quantized with every other group restored; its verdict is the share of the
  loss that stays (the loss it holds). Where the loss comes from several groups at once (outlier channels
  read by q, k, v, gate and up: restoring one of them alone recovers nothing while the others still break
  the model), restoring one at a time cannot tell them apart from a group that does not matter; leaving one
  at a time does.

A share on the subset's accuracy counts only beyond the subset's sampling interval (`beyond_noise`: on each
failing task, the loss recovered up to the restored copy's lower recovery bound, or with `without` the loss
that stays at its upper bound; at least 0, summed over the tasks), so a group that brings back two answers of
32 does not outrank one that brings back none when both are inside the noise. Shares are compared in whole
percent, as printed (`counted`); groups whose shares are equal, 0% for those within the noise included, are
ranked by their share of the KLD.

    found = explain(Probe(failed, ["tiny_arith"], docs=64, budget=2000), by="layer")
    found["findings"][0]["layers"]     # the group that recovers the largest share, measured first
"""

from __future__ import annotations

import logging
import re

from evalsuite.loss_shares import counted, rank_key, within_noise
from evalsuite.probing import BudgetExhausted, Measured, Probe

log = logging.getLogger("evalsuite")

GRANULARITIES = ("layer", "block", "type")
MEASURES = ("bisect", "alone", "without")
BISECT_ABOVE = 8  # more groups than this are bisected; fewer are each measured
MOST = 0.5  # a half that recovers at least this share of the loss holds the culprit


def groups_of(layers: list[dict], by: str) -> dict[str, list[str]]:
    """Layer names grouped: `layer` (one each), `block` (model.layers.N), `type` (the last name part)."""
    if by not in GRANULARITIES:
        raise ValueError(f"group by {by!r}: use one of {', '.join(GRANULARITIES)}")
    groups: dict[str, list[str]] = {}
    for layer in layers:
        name = layer["name"]
        if by == "layer":
            key = name
        elif by == "block":
            match = re.match(r"(.*\.layers\.\d+)\.", name)
            key = match.group(1) if match else name
        else:
            key = name.rsplit(".", 1)[-1]
        groups.setdefault(key, []).append(name)
    return groups


def proxy_order(groups: dict[str, list[str]], layers: list[dict]) -> list[str]:
    """Groups by their lowest output SQNR (worst first); groups without one keep model order, last."""
    sqnr = {x["name"]: x.get("sqnr_db") for x in layers}

    def worst(group: str) -> float:
        found = [sqnr[n] for n in groups[group] if sqnr.get(n) is not None]
        return min(found) if found else float("inf")

    return sorted(groups, key=worst)


def share(reference: Measured, m: Measured) -> dict:
    """The share of the reference's loss that `m` recovers: on the failing tasks' recovery when the subset
    shows a loss (its interval from m's 95% recovery intervals), else on the KLD; and the KLD share beside it.
    `beyond_noise` is the part outside the subset's sampling interval: per task, the loss recovered up to m's
    lower recovery bound (at least 0), summed over the tasks, over the loss; on the KLD basis, which has no
    interval, the KLD share (at least 0). It is what ranks the groups."""
    out: dict = {"kld_share": None}
    if reference.kld and m.kld is not None:
        out["kld_share"] = (reference.kld - m.kld) / reference.kld
    gap = reference.gap()
    if gap > 0:
        out.update(
            basis="recovery",
            share=(gap - m.gap()) / gap,
            low=(gap - m.gap("low")) / gap,
            high=(gap - m.gap("high")) / gap,
        )
        lost, kept = reference.gaps(), m.gaps("low")
        out["beyond_noise"] = sum(max(0.0, lost[t] - kept.get(t, lost[t])) for t in lost) / gap
    else:
        out.update(basis="kld", share=out["kld_share"], low=None, high=None)
        out["beyond_noise"] = None if out["kld_share"] is None else max(0.0, out["kld_share"])
    return out


def held(reference: Measured, m: Measured) -> dict:
    """The share of the reference's loss that stays in `m`, where one group is left quantized and the others
    restored (`measure="without"`), in the shape of `share`: `beyond_noise` sums per task the loss that stays
    at m's upper recovery bound; on the KLD basis, m's KLD over the reference's."""
    out: dict = {"kld_share": None}
    if reference.kld and m.kld is not None:
        out["kld_share"] = m.kld / reference.kld
    gap = reference.gap()
    if gap > 0:
        out.update(basis="recovery", share=m.gap() / gap, low=m.gap("high") / gap, high=m.gap("low") / gap)
        out["beyond_noise"] = m.gap("high") / gap
    else:
        out.update(basis="kld", share=out["kld_share"], low=None, high=None)
        out["beyond_noise"] = out["kld_share"]
    return out


def _finding(group: str, layers: list[str], reference: Measured, m: Measured, verdict=share) -> dict:
    return {"group": group, "layers": layers, **verdict(reference, m), "recovery": m.recovery, "kld": m.kld}


def explain(
    probe: Probe,
    by: str = "layer",
    base: list[str] | None = None,
    measure: str = "bisect",
    bisect_above: int = BISECT_ABOVE,
) -> dict:
    """Rank the groups of the probe's variant (with `base` already restored) by the share of its loss they
    recover, or with `measure="without"` hold (`rank_key`). `measure`: "bisect" halves the candidates past
    `bisect_above` groups, "alone" restores every group on its own, "without" restores every group but one.
    Stops at the probe's budget, keeping what it measured (`stopped` says so)."""
    if measure not in MEASURES:
        raise ValueError(f"measure {measure!r}: use one of {', '.join(MEASURES)}")
    base = sorted(base or [])
    layers = [x for x in probe.failed.layers if x["name"] not in base]
    groups = groups_of(layers, by)
    order = proxy_order(groups, layers)
    result = {"variant": probe.failed.spec.name, "by": by, "measure": measure, "base": base, "tasks": probe.tasks}
    result["docs"] = probe.docs
    result |= {"budget": probe.budget, "trail": [], "findings": [], "stopped": None}
    try:
        reference = probe.reference(base)
        result["reference"] = {"recovery": reference.recovery, "kld": reference.kld}
        candidates = order
        if measure == "bisect" and len(order) > bisect_above:
            candidates = _bisect(probe, groups, order, base, reference, result)
        for group in candidates:  # one at a time: what was measured stays when the budget runs out
            if measure == "without":
                others = [n for g in order if g != group for n in groups[g]]
                m = probe.measure([base + others])[0]
                result["findings"].append(_finding(group, groups[group], reference, m, held))
            else:
                m = probe.measure([base + groups[group]])[0]
                result["findings"].append(_finding(group, groups[group], reference, m))
    except BudgetExhausted as err:
        result["stopped"] = str(err)
        log.warning("explain stopped: %s; what was measured so far is kept", err)
    result["findings"].sort(key=rank_key, reverse=True)
    result["calls"] = probe.spent
    return result


def _bisect(probe: Probe, groups: dict, order: list[str], base: list[str], reference: Measured, result: dict) -> list:
    """Halves the candidates while one half recovers at least MOST of the loss beyond the noise; when both
    halves' accuracy shares are within the noise, a half that recovers MOST of the KLD is taken instead."""
    candidates = order
    while len(candidates) > 1:
        half = len(candidates) // 2
        chosen, tried = None, []
        for part in (candidates[:half], candidates[half:]):
            layers = [n for g in part for n in groups[g]]
            found = share(reference, probe.measure([base + layers])[0])
            tried.append((part, found))
            keys = ("share", "beyond_noise", "kld_share", "basis")
            result["trail"].append({"groups": part, **{k: found[k] for k in keys}})
            if (counted(found) or 0) >= MOST:
                chosen = part
                break
        if chosen is None and all(not counted(f) for _, f in tried):
            chosen = next((part for part, f in tried if (f["kld_share"] or 0) >= MOST), None)
        if chosen is None:
            log.info(
                "neither half recovers %d%% of the loss: measuring the %d groups left one by one",
                100 * MOST,
                len(candidates),
            )
            return candidates
        candidates = chosen
    return candidates


MEASURED_AS = {
    "bisect": "",
    "alone": " (each restored alone)",
    "without": " (each left quantized, the other groups restored)",
}


def format_explanation(result: dict) -> str:
    """The ranking as text: the groups responsible first, each with its measured share and interval."""
    lines = [
        f"{result['variant']}: {len(result['findings'])} group(s) by {result['by']}"
        f"{MEASURED_AS[result['measure']]} measured on "
        f"{', '.join(result['tasks']) or 'the fidelity texts'} (first {result['docs']} documents), "
        f"{result['calls']} model calls of {result['budget']}"
    ]
    if result["base"]:
        lines.append(f"  with {len(result['base'])} layer(s) already restored")
    for f in result["findings"]:
        interval = f" [{100 * f['low']:.0f}, {100 * f['high']:.0f}]" if f.get("low") is not None else ""
        kld = f", KLD share {100 * f['kld_share']:.0f}%" if f.get("kld_share") is not None else ""
        share_text = "n/a" if f["share"] is None else f"{100 * f['share']:.0f}%"
        basis = f["basis"] + ("; within noise" if within_noise(f) else "")
        verb = "holds" if result["measure"] == "without" else "recovers"
        lines.append(f"  {f['group']}: {verb} {share_text}{interval} of the loss ({basis}){kld}")
    if result["stopped"]:
        lines.append(f"  stopped: {result['stopped']}")
    return "\n".join(lines)
