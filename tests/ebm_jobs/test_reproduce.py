"""``ebm reproduce`` end to end at the smoke scale: real Ray Tune, real MLflow, a complete report."""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import replace

import pytest
import scipy.stats

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from ebm_core.config import Config, ConfigError  # noqa: E402
from ebm_core.presets import get_preset  # noqa: E402
from ebm_core.recipes import FIG8, SCALES, TABLE2, table4  # noqa: E402
from ebm_eval.report import Welch, compared, needed_scale, verdict, welch  # noqa: E402
from ebm_jobs.reproduce import plan, reproduce  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from ebm_jobs.cluster import init_ray

    init_ray("local", num_cpus=2, log_to_driver=False)  # private, whatever runs on the machine
    yield ray
    ray.shutdown()


def test_verdict_rule_is_welchs_one_sided_test():
    a, b = [1.0, 1.4, 0.7, 1.2], [1.9, 2.6, 1.5, 2.2, 2.4]  # lower is better: a beats b
    # Welch's t and Welch-Satterthwaite df by hand, p from the t distribution's survival function
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    test = welch(a, b, higher_is_better=False)
    assert test.p == pytest.approx(scipy.stats.t.cdf(t, df)) and test.p_opposite == pytest.approx(scipy.stats.t.sf(t, df))
    pooled = math.sqrt((3 * statistics.variance(a) + 4 * statistics.variance(b)) / 7)
    assert test.d == pytest.approx((statistics.mean(b) - statistics.mean(a)) / pooled)
    assert verdict(test).startswith("reproduced (p = ")
    assert verdict(welch(a, b, higher_is_better=True)).startswith("not reproduced")
    # 2 seeds a side, 2.2 standard errors apart: the old "2 standard errors" rule said reproduced; p = 0.08 does not
    weak = welch([1.0, 1.2], [1.3, 1.5], higher_is_better=False)
    assert 0.05 < weak.p < 0.1 and verdict(weak).startswith("inconclusive")
    assert verdict(None).startswith("inconclusive")
    assert welch([1.0, 1.0], [2.0, 2.0], higher_is_better=False).p == 0.0  # exact difference, no variance


def test_seeds_needed_follow_the_power_formula():
    z = scipy.stats.norm.ppf(0.95) + scipy.stats.norm.ppf(0.8)
    for d in (0.3, 1.0, 2.5):
        n = Welch(p=0.2, p_opposite=0.8, d=d, n=(4, 4)).seeds_needed()
        assert n == math.ceil(2 * (z / d) ** 2) + 1
    assert Welch(p=0.9, p_opposite=0.1, d=-0.4, n=(4, 4)).seeds_needed() is None
    claim = compared("x beats y", "", [1.0, 1.3, 0.9, 1.2], [1.1, 1.4, 1.0, 1.25], higher_is_better=False)
    assert claim.verdict.startswith("inconclusive") and "seeds per side" in needed_scale(claim, 4)


def test_small_scale_trains_with_the_reference_settings_where_the_shapes_preset_departs():
    """The shapes preset decays its rate, uses a weaker energy regulariser, leaky ReLU, a faster rate and a unary term
    for its samples (docs/demo-tuning.md); the reproduction compares the paper's variants under the reference code's
    constant rate, alpha = 1, swish and no unary term, at the rate of the committed report, and unconditional: the
    demo preset's conditioning and generation crops stay out of it."""
    def settings(c: Config) -> tuple:
        return c.loss.alpha, c.optim.decay_fraction, c.model.activation, c.optim.lr

    shapes, small = get_preset("shapes"), SCALES["small"].base()
    assert settings(shapes) == (0.1, 0.4, "leaky_relu", 2e-3)
    assert settings(small) == (1.0, 0.0, "swish", 1e-3)
    assert shapes.model.unary_width == 32 and small.model.unary_width == 0
    assert (shapes.generate.rounds, shapes.generate.settle_rounds) == (9, 3)
    assert (small.generate.rounds, small.generate.settle_rounds) == (6, 2)  # as the committed report was measured
    assert small.model == replace(shapes.model, activation="swish", unary_width=0) and small.sampler == shapes.sampler
    assert small.data.labels == () and small.model.num_classes == () and small.generate.crop_scale is None
    assert small.augment == shapes.augment


def test_plan_trains_identical_configurations_once():
    scale = SCALES["small"]
    models = table4({"shape": 3, "colour": 6}, scale.comp_overrides)
    trials = plan(scale, scale.base(), models)
    names = [t.name for t in trials]
    assert len(names) == len(set(names))
    shared = [t for t in trials if TABLE2.aug in t.roles]
    assert len(shared) == scale.seeds and all(FIG8.no_kl in t.roles for t in shared)  # demo: aug on, one scale
    assert len(trials) == scale.seeds * 9 + scale.comp_seeds * 2 * len(scale.comp_attributes)
    # Table 4's conditional models are judged by composition, not by end-of-run quality figures (time in the budget)
    assert all(v.overrides["jobs.quality_samples"] == 0 for v in models.values())


def test_bad_input_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="--scale"):
        reproduce("huge", out=tmp_path / "a", report=tmp_path / "R.md")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        reproduce("test", out=tmp_path / "b", report=tmp_path / "R.md")
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine" and not (tmp_path / "R.md").exists()


def test_smoke_scale_end_to_end(ray_local, tmp_path):
    from mlflow.tracking import MlflowClient

    report = tmp_path / "docs" / "RESULTS.md"
    rep = reproduce("test", out=tmp_path / "work", report=report, log=lambda *_: None)
    text = report.read_text()
    for section in ("Table 2", "Fig. 8", "Fig. 9", "Fig. 6", "Fig. 7", "Table 3", "Table 4", "Cost of the KL term",
                    "What would decide the inconclusive claims", "Welch's one-sided t-test"):
        assert section in text, section
    assert "| *held-out real images* |" in text  # Table 2's yardstick row, from the trials' quality figures
    for png in ("table2_quality", "fig8_stability", "fig9_grad_norms", "fig6_mixing", "fig7_lowtemp"):
        assert (report.parent / "results" / f"{png}.png").stat().st_size > 0, png
    assert {c.verdict.split(" (")[0] for c in rep.claims} <= {"reproduced", "not reproduced", "inconclusive"}
    assert len(rep.claims) == 15
    saved = json.loads((tmp_path / "work" / "results.json").read_text())
    assert saved["mlflow_run_id"] == rep.mlflow_run_id and len(saved["claims"]) == 15
    assert all(r.row.get("run_id") for r in rep.runs)  # every trial finished with its own MLflow run
    client = MlflowClient(rep.mlflow_uri)
    run = client.get_run(rep.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert "RESULTS.md" in [a.path for a in client.list_artifacts(run.info.run_id)]
    sweep = client.get_run(rep.sweep_parent_run_id)
    assert sweep.data.tags["mlflow.parentRunId"] == run.info.run_id
