"""explain and fix on the embedded model with one layer made deliberately bad (a 2-bit per-tensor override):
explain names that layer first, fix restores exactly it and passes the gate, the search keeps to its budget,
the reports show the diagnosis first, and the exported recipe loads back through compressed-tensors with the
same scores. The failed runs and their fixes are made once per module and shared by the tests that read them;
the search's order of prefixes is checked on a scripted probe (no model)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from evalsuite.cli import main
from evalsuite.config import load_suite, parse_suite
from evalsuite.fixing import fix
from evalsuite.gating import parse_gate_config
from evalsuite.probing import ExplainError, Probe, load_failed_run
from evalsuite.runner import run_suite
from evalsuite.sensitivity import explain, format_explanation, groups_of

BAD = "model.layers.1.mlp.down_proj"
INT2 = {"weights": {"num_bits": 2, "type": "int", "strategy": "tensor"}}  # deliberately bad
VARIANT = "W8A16-bad"
GATE = {"use": "lower_bound", "rules": [{"suite": "academic", "min_recovery": 95}]}
DOCS = 32  # tiny_mc documents: the 2-bit layer costs about a third of the accuracy, far outside the interval


def bad_suite(model: str) -> dict:
    return {
        "name": "xf",
        "model": {"path": model},
        "variants": [
            {
                "name": VARIANT,
                "scheme": "W8A16",
                "overrides": [
                    {"layers": BAD, "scheme": {"weights": {"num_bits": 2, "type": "int", "strategy": "tensor"}}}
                ],
            }
        ],
        "suites": {
            "academic": {"tasks": [{"name": "tiny_mc", "limit": DOCS}]},
            "fidelity": {"texts": ["tiny_ppl"], "limit": 1},
        },
        "run": {"bootstrap_iters": 200, "calibration": {"samples": 4, "seq_len": 64}},
    }


def make_failed_run(kind: str, tmp_path_factory):
    root = tmp_path_factory.mktemp(kind)
    model = "embedded:tiny"
    if kind == "outliers":
        from evalsuite.reference.outliers import main as make_outliers

        make_outliers(["--out", str(root / "model")])
        model = str(root / "model")
    suite = root / "suite.yaml"
    suite.write_text(yaml.safe_dump(bad_suite(model)))
    run_suite(load_suite(suite), root / "run")
    return root


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    return make_failed_run("embedded", tmp_path_factory)


@pytest.fixture(scope="module", params=["embedded", "outliers"])
def failed_run(request, embedded_run, tmp_path_factory):
    return embedded_run if request.param == "embedded" else make_failed_run("outliers", tmp_path_factory)


FIXED: dict = {}


def fixed(root) -> tuple[dict, Probe]:
    """The fix of a failed run (computed once per run, shared by the tests that read it). The recipe's speed is
    timed on a few tokens only: the tests check that it is measured and reported, not how fast it is."""
    from evalsuite import bench_e2e

    if root not in FIXED:
        failed = load_failed_run(root / "run", VARIANT)
        probe = Probe(failed, ["tiny_mc"], docs=DOCS, budget=400)
        with pytest.MonkeyPatch.context() as patch:
            for name, value in (("SPEED_PREFILL", 16), ("SPEED_CONTEXT", 8), ("SPEED_STEPS", 2)):
                patch.setattr(bench_e2e, name, value)
            FIXED[root] = fix(failed, parse_gate_config(GATE, "gate"), probe), probe
    return FIXED[root]


def test_fix_restores_exactly_the_bad_layer_and_passes(failed_run):
    result, probe = fixed(failed_run)
    first = result["rounds"][0]
    assert first["findings"][0]["group"] == BAD  # explain names the bad layer first
    assert first["findings"][0]["share"] > 0.5
    assert [t["share"] for t in first["trail"]][-1] > 0.5  # the bisection ended on it
    assert result["passed"] and result["restored"] == [BAD] and result["groups"] == [BAD]
    assert result["order"][0] == BAD and [s["k"] for s in result["screened"]] == [1]
    assert [v["k"] for v in result["verified"]] == [1] and result["verified"][0]["passed"]  # one full run
    assert result["calls"] <= probe.budget
    costs = result["recipe"]["variants"]
    recipe, original = costs[f"{VARIANT}-fixed"], costs[VARIANT]
    assert recipe["weight_bytes"] > original["weight_bytes"]  # the restored layer costs bytes, and says how many
    assert recipe["decode_tok_s"] > 0 and original["decode_tok_s"] > 0
    assert json.loads((failed_run / "run" / "fix" / VARIANT / "fix.json").read_text())["restored"] == [BAD]


def test_the_reports_show_the_diagnosis_first(embedded_run):
    from reports import render_reports

    result, _ = fixed(embedded_run)
    md, html = render_reports(embedded_run / "run" / "results.json")
    page = html.read_text()
    assert page.index('id="diagnosis"') < page.index('id="recovery"')  # the answer before the tables
    row = page[page.index('id="diagnosis"') : page.index("</table>", page.index('id="diagnosis"'))]
    share = next(f for f in result["rounds"][0]["findings"] if f["group"] == BAD)
    assert f"{BAD}: {100 * share['share']:.0f}% [{100 * share['low']:.0f}, {100 * share['high']:.0f}]" in row
    assert f"{VARIANT}-fixed: 1 layer(s) as float, gate passes" in row
    bytes_fixed = result["recipe"]["variants"][f"{VARIANT}-fixed"]["weight_bytes"]
    assert f"{bytes_fixed:,} B" in row and "tok/s decode" in row
    text = md.read_text()
    assert text.index("## Why it fails") < text.index("## Recovery") and f"{bytes_fixed:,} B" in text


class ScriptedProbe:
    """A probe whose subset passes once the first `subset_from` groups are restored (no model runs)."""

    def __init__(self, subset_from: int):
        self.subset_from, self.asked = subset_from, []

    def measure(self, sets):
        from evalsuite.probing import Measured

        self.asked.append(len(sets[0]))
        return [Measured(sets[0], "v", {}, None, 0, screened=len(sets[0]) >= self.subset_from)]


@pytest.mark.parametrize(
    "subset_from, full_from, screened, verified, found",
    [
        (1, 1, [1], [1], 1),  # one layer holds the loss: one trial, one full run
        (5, 5, [1, 2, 4, 8, 6, 5], [5, 2, 3, 4], 5),  # doubling, halving down; full runs check below it
        (5, 3, [1, 2, 4, 8, 6, 5], [5, 2, 3], 3),  # the subset was too strict: the full runs go lower
        (5, 9, [1, 2, 4, 8, 6, 5], [5, 6, 8, 12, 10, 9], 9),  # the full run asks more: up by doubling steps, back down
        (99, 28, [1, 2, 4, 8, 16, 28], [28, 14, 21, 24, 26, 27], 28),  # the subset never passes: every group
        (99, 99, [1, 2, 4, 8, 16, 28], [28], None),  # nothing passes, not even every group: no recipe, said so
    ],
)
def test_the_search_finds_the_smallest_passing_prefix(monkeypatch, subset_from, full_from, screened, verified, found):
    from evalsuite import fixing

    order = [(f"layer{i:02d}", [f"layer{i:02d}"]) for i in range(28)]
    runs = []

    def full_run(failed, restored, keep, gate, probe, speed=False):
        runs.append(len(restored))
        assert speed == (len(runs) == 1)  # timed on the first full run only
        return {"passed": len(restored) >= full_from}

    monkeypatch.setattr(fixing, "verify", full_run)
    probe, result = ScriptedProbe(subset_from), {"screened": [], "verified": []}
    k = fixing.screen(probe, order, result)
    assert probe.asked == screened and [s["k"] for s in result["screened"]] == screened
    assert fixing._verify_from(None, None, probe, "float", order, k, result) == found
    assert runs == verified


class AdditiveProbe:
    """A probe without a model: the variant recovers 80% of task t with mean KLD 1.0; each restored layer adds
    its (recovery on t, KLD) effect; t's interval is the point +- 0.1 (the noise). Task u lost nothing, with a
    wide interval, 100% [70, 130], that no layer changes: its noise must not hide what a layer recovers on t."""

    def __init__(self, effects: dict[str, tuple[float, float]]):
        from types import SimpleNamespace

        self.effects, self.trials = effects, []
        layers = [{"name": n, "sqnr_db": float(i)} for i, n in enumerate(effects)]  # proxy order: as given
        spec = SimpleNamespace(name="v")
        self.failed = SimpleNamespace(layers=layers, spec=spec)
        self.tasks, self.docs, self.budget, self.spent = ["t"], 32, 10_000, 0

    def measure(self, sets):
        from evalsuite.probing import Measured

        out = []
        for restored in sets:
            self.trials.append(sorted(restored))
            r = 0.8 + sum(self.effects[n][0] for n in restored)
            kld = 1.0 - sum(self.effects[n][1] for n in restored)
            recovery = {"t": (r, r - 0.1, r + 0.1), "u": (1.0, 0.7, 1.3)}
            out.append(Measured(sorted(restored), "v", recovery, kld, 1))
        return out

    def reference(self, base):
        return self.measure([base])[0]


def test_shares_count_only_beyond_the_noise_and_the_kld_breaks_ties():
    from evalsuite.fixing import ranking

    effects = {
        "noisy": (0.10, 0.1),  # half the accuracy loss at its point, but inside the noise; little KLD
        "kld": (0.02, 0.8),  # little accuracy, inside the noise; most of the KLD
        "real": (0.20, 0.5),  # all of the accuracy loss, beyond the noise
        "real-less-kld": (0.20, 0.3),  # the same share beyond the noise, less KLD: ranked after "real"
        "hair": (0.1002, 0.05),  # 0.1% beyond the noise: equal to 0% in whole percent, so less KLD ranks it last
        "idle": (0.0, 0.0),
    }
    probe = AdditiveProbe(effects)
    found = explain(probe, "layer", measure="alone")
    by_group = {f["group"]: f for f in found["findings"]}
    assert by_group["noisy"]["share"] == pytest.approx(0.5) and by_group["noisy"]["beyond_noise"] == 0
    assert by_group["real"]["beyond_noise"] == pytest.approx(0.5)  # (0.2 - 0.1) / 0.2: the part past t's noise
    assert by_group["real"]["low"] < 0  # the interval of the share, summed over t and u, is wider
    assert by_group["hair"]["beyond_noise"] == pytest.approx(0.001)
    assert [f["group"] for f in found["findings"]] == ["real", "real-less-kld", "kld", "noisy", "hair", "idle"]
    order = [g for g, _ in ranking(found, probe.failed.layers, "layer")]
    assert order == ["real", "real-less-kld", "kld", "noisy", "hair", "idle"]
    assert "noisy: recovers 50% [-150, 100] of the loss (recovery; within noise), KLD share 10%" in (
        format_explanation(found)
    )


def test_bisection_follows_the_kld_when_both_halves_are_within_the_noise():
    effects = {f"l{i}": (0.02, 0.0) for i in range(5)}  # first in proxy order: half the loss at the point, noise
    effects |= {f"l{i}": (0.0, 0.9 if i == 7 else 0.0) for i in range(5, 10)}
    probe = AdditiveProbe(effects)
    found = explain(probe, "layer")
    assert [t["groups"] for t in found["trail"]][:2] == [[f"l{i}" for i in range(5)], [f"l{i}" for i in range(5, 10)]]
    assert found["findings"][0]["group"] == "l7" and found["findings"][0]["kld_share"] == pytest.approx(0.9)


# bisect: the half of 5, its halves 2 and 3, then 1 (chosen) and 1 again as the finding
@pytest.mark.parametrize("measure, trials", [("bisect", 5), ("alone", 10)])
def test_measure_alone_restores_every_group_on_its_own(measure, trials):
    effects = {f"l{i}": (0.2 if i == 2 else 0.0, 0.9 if i == 2 else 0.01) for i in range(10)}
    probe = AdditiveProbe(effects)
    found = explain(probe, "layer", measure=measure)
    restored = [t for t in probe.trials if t]
    assert len(restored) == trials and found["measure"] == measure
    assert found["findings"][0]["group"] == "l2"
    if measure == "alone":
        assert restored == [[f"l{i}"] for i in range(10)] and not found["trail"]
    with pytest.raises(ValueError, match="use one of bisect, alone"):
        explain(probe, "layer", measure="halves")


class TogetherProbe(AdditiveProbe):
    """Outlier channels read by several layers: task t comes back only when both `a` and `b` are restored;
    `decoy` restored alone takes some KLD away (as down_proj did for W8A8 on the outlier model) but no
    accuracy; `idle` does nothing."""

    def measure(self, sets):
        from evalsuite.probing import Measured

        out = []
        for restored in sets:
            self.trials.append(sorted(restored))
            both = {"a", "b"} <= set(restored)
            r = 1.0 if both else 0.8
            kld = (0.0 if both else 0.9 if {"a", "b"} & set(restored) else 1.0) + (0.0 if "decoy" in restored else 0.2)
            out.append(Measured(sorted(restored), "v", {"t": (r, r - 0.1, r + 0.1), "u": (1.0, 0.7, 1.3)}, kld, 1))
        return out


def test_measure_without_finds_the_groups_that_only_help_together():
    from evalsuite.fixing import ranking

    effects = dict.fromkeys(["decoy", "a", "idle", "b"], (0.0, 0.0))  # the proxy order
    alone = explain(TogetherProbe(effects), "layer", measure="alone")
    assert alone["findings"][0]["group"] == "decoy"  # restored one at a time, a and b look like nothing
    assert all(f["beyond_noise"] == 0 for f in alone["findings"])
    probe = TogetherProbe(effects)
    without = explain(probe, "layer", measure="without")
    assert [t for t in probe.trials if t] == [
        ["a", "b", "idle"],
        ["b", "decoy", "idle"],
        ["a", "b", "decoy"],
        ["a", "decoy", "idle"],
    ]
    by_group = {f["group"]: f for f in without["findings"]}
    assert by_group["a"]["share"] == pytest.approx(1.0) and by_group["a"]["beyond_noise"] == pytest.approx(0.5)
    assert by_group["idle"]["share"] == 0 and by_group["decoy"]["share"] == 0
    assert by_group["decoy"]["kld_share"] == pytest.approx(0.2 / 1.2)  # the KLD that stays without it
    order = [g for g, _ in ranking(without, probe.failed.layers, "layer")]
    assert order[:2] in (["a", "b"], ["b", "a"]) and order[2:] == ["decoy", "idle"]
    assert "a: holds 100% [50, 300] of the loss (recovery), KLD share 75%" in format_explanation(without)


def test_fix_keeps_the_smallest_pass_when_the_budget_stops_the_search(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from evalsuite import fixing
    from evalsuite.probing import BudgetExhausted

    order = [(f"g{i}", [f"layer{i}"]) for i in range(7)]
    runs = []

    def full_run(failed, restored, keep, gate, probe, speed=False):
        if not speed and len(runs) == 3:  # passes at 6, fails at 3 and 4; 5 would pass the budget
            raise BudgetExhausted("the budget of 2000 model calls is spent")
        runs.append((len(restored), speed))
        return {"passed": len(restored) >= 6, "speed": speed, "variant": "v-fixed", "suite_file": "s.yaml"}

    monkeypatch.setattr(fixing, "explain", lambda probe, by, measure: {"stopped": None, "findings": []})
    monkeypatch.setattr(fixing, "ranking", lambda found, layers, by: order)
    monkeypatch.setattr(fixing, "screen", lambda probe, order, result: 6)
    monkeypatch.setattr(fixing, "verify", full_run)
    failed = SimpleNamespace(spec=SimpleNamespace(name="v"), layers=[], run_dir=tmp_path)
    result = fixing.fix(failed, parse_gate_config(GATE, "gate"), SimpleNamespace(gate=None, spent=0))
    assert runs == [(6, True), (3, False), (4, False), (6, True)]  # the recipe run again: its suite.yaml last
    assert result["passed"] and result["restored"] == [f"layer{i}" for i in range(6)]
    assert "budget of 2000" in result["stopped"] and result["recipe"]["variant"] == "v-fixed"


def test_explain_stops_within_its_budget_keeping_what_it_found(embedded_run):
    _, probe = fixed(embedded_run)  # its reference (the variant on the subset) is measured already
    spent, probe.per_trial = probe.spent, 5  # as if observed: one restored copy costs 5 calls
    probe.budget = spent + 7  # 7 more calls allow one copy, not two
    result = explain(probe, "type")
    assert result["stopped"] and f"budget of {spent + 7} model calls" in result["stopped"]
    assert result["calls"] <= spent + 7 and len(result["findings"]) == 1


def test_groups_by_block_and_type():
    layers = [{"name": f"model.layers.{i}.mlp.{t}"} for i in (0, 1) for t in ("up_proj", "down_proj")]
    assert groups_of(layers, "block") == {
        "model.layers.0": ["model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"],
        "model.layers.1": ["model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"],
    }
    assert groups_of(layers, "type")["down_proj"] == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]


def test_explain_cli_says_when_the_budget_stops_it(embedded_run, capsys):
    run = str(embedded_run / "run")
    code = main(["explain", run, "--variant", VARIANT, "--docs", str(DOCS), "--budget", "0", "--measure", "alone"])
    out = capsys.readouterr().out
    assert code == 1  # nothing ranked
    assert "stopped: the budget of 0 model calls is spent" in out and "explain.json" in out
    written = json.loads((embedded_run / "run" / "explain" / VARIANT / "explain.json").read_text())
    assert written["measure"] == "alone" and written["findings"] == []


def test_an_unknown_variant_or_missing_suite_file_is_named(embedded_run, tmp_path):
    with pytest.raises(ExplainError, match="no variant 'nope'.*W8A16-bad"):
        load_failed_run(embedded_run / "run", "nope")
    with pytest.raises(ExplainError, match="holds no results.json"):
        load_failed_run(tmp_path, VARIANT)


def test_the_exported_recipe_loads_back_with_the_same_scores(embedded_run, tmp_path):
    from evalsuite.exporting import export_variant
    from evalsuite.quant_schemes.checkpoints import load_quantized

    result, _ = fixed(embedded_run)
    config = load_suite(result["recipe"]["suite_file"])
    out = export_variant(config, f"{VARIANT}-fixed", tmp_path / "exported")
    from compressed_tensors.quantization import QuantizationConfig

    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    parsed = QuantizationConfig.model_validate(qc)  # the compressed-tensors package reads it
    assert BAD in parsed.ignore and "lm_head" in parsed.ignore
    model, report = load_quantized(out, "cpu", torch.float32, "torch-ref")
    assert BAD not in report["layers"] and len(report["layers"]) == 27
    raw = json.loads(json.dumps(config.model_dump(exclude={"source"})))
    raw["variants"] = [next(v for v in raw["variants"] if v["name"] == f"{VARIANT}-fixed"), {"path": str(out)}]
    data = run_suite(parse_suite(raw), tmp_path / "run", store_path=embedded_run / "run" / "store.sqlite").data
    scores = {(m["variant"], m["metric"]): m["value"] for m in data["metrics"] if m["task"] == "tiny_mc"}
    for metric in ("acc", "acc_norm"):
        assert scores[(f"{VARIANT}-fixed", metric)] == scores[("exported", metric)]


@pytest.mark.parametrize(
    "variant, message",
    [
        ({"overrides": [{"layers": "re:(", "scheme": "W8A16"}]}, "is not a regular expression"),
        ({"overrides": [{"layers": "q_proj", "scheme": "KV_INT8"}]}, "an override's scheme quantizes weights"),
        ({"overrides": [{"layers": "q_proj", "sceme": "W8A16"}]}, "sceme"),
        ({"algorithm": "awq", "overrides": [{"layers": "q_proj", "scheme": "float"}]}, "go with algorithm rtn or gptq"),
    ],
)
def test_bad_overrides_are_refused_naming_the_field(variant, message):
    from evalsuite.config import ConfigError

    raw = {"name": "t", "variants": [{"name": "v", "scheme": "W4A16", **variant}], "suites": {"fidelity": {}}}
    with pytest.raises(ConfigError, match=message) as err:
        parse_suite(raw, "suite.yaml")
    assert "variants[0]" in str(err.value)


def test_overrides_keep_the_hash_of_schemes_without_them_and_change_it_with():
    from evalsuite.quant_schemes.scheme import resolve

    plain = parse_suite({"name": "t", "variants": ["W4A16"], "suites": {"fidelity": {}}}).variants[0]
    assert plain.resolved_scheme.hash == resolve("W4A16").hash == "80d268f34d685f64"  # as before overrides existed
    raw = {"name": "v", "scheme": "W4A16", "overrides": [{"layers": "re:.*down_proj", "scheme": "W8A16"}]}
    mixed = parse_suite({"name": "t", "variants": [raw], "suites": {"fidelity": {}}}).variants[0]
    assert mixed.resolved_scheme.hash != plain.resolved_scheme.hash
    assert "re:.*down_proj: W int8 channel" in mixed.resolved_scheme.describe()


def test_a_mixed_precision_recipe_exports_one_group_per_scheme(tmp_path):
    from compressed_tensors.quantization import QuantizationConfig

    from evalsuite.exporting import export_variant
    from evalsuite.quant_schemes.checkpoints import load_quantized

    raw = {"name": "v", "scheme": "W4A16", "overrides": [{"layers": "re:.*down_proj", "scheme": "W8A16"}]}
    config = parse_suite({"name": "t", "variants": [raw], "suites": {"fidelity": {}}, "run": {"calibration": None}})
    out = export_variant(config, "v", tmp_path / "ct")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    parsed = QuantizationConfig.model_validate(qc)
    bits = {g.weights.num_bits: sorted(g.targets) for g in parsed.config_groups.values()}
    assert bits[8] == [f"model.layers.{i}.mlp.down_proj" for i in range(4)] and len(bits[4]) == 24
    _, report = load_quantized(out, "cpu", torch.float32, "torch-ref")
    assert len(report["layers"]) == 28 and len(report["scheme"].overrides) == 4
