"""The reproduction report: curves drawn from the runs, one verdict per claim, ``RESULTS.md``.

A verdict compares two groups of per-seed numbers (claim: A beats B) with Welch's t-test, one-sided
(unequal variances; scipy's ``ttest_ind``). "reproduced": p < 0.05 for the claimed direction;
"not reproduced": p < 0.05 for the opposite one; "inconclusive": neither, or fewer than two seeds a
side. Each verdict carries its p-value and effect size (Cohen's d, signed so that positive is the
claimed way) and, when inconclusive, the seeds per side a test with 80 % power would need at that
effect size. Every number comes from the run that this report describes; no seed is dropped.
"""

from __future__ import annotations

import math
import statistics
from statistics import NormalDist
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ebm_core.config import Config  # noqa: E402
from ebm_core.recipes import FIG8, TABLE2, Scale, Variant  # noqa: E402

from .evaluations import Evaluations, RunResult, runs_of  # noqa: E402
from .quality import HELD_OUT_SPLITS  # noqa: E402

WARMUP = 0.2  # Fig. 8's spike measure ignores the first 20 % of iterations
RATIO_FLOOR = 0.05  # Fig. 9: "non-negligible" means grad_norm/kl >= 5 % of grad_norm/cd here


ALPHA = 0.05  # one-sided significance level of every two-group verdict
POWER = 0.8  # for the seeds-needed estimate of an inconclusive claim


@dataclass
class Welch:
    """Welch's one-sided t-test of "A beats B": p for the claimed and the opposite direction, Cohen's d."""

    p: float  # claimed direction
    p_opposite: float
    d: float  # (mean A - mean B) / pooled sd, positive = the claimed way
    n: tuple[int, int]

    def seeds_needed(self) -> int | None:
        """Seeds per side for a one-sided test at ``ALPHA`` with ``POWER`` if the true effect were ``d`` (normal
        approximation, n = 2 (z_(1-alpha) + z_power)^2 / d^2, plus one for the t distribution); None for d <= 0."""
        if not self.d > 0:
            return None
        z = NormalDist().inv_cdf(1 - ALPHA) + NormalDist().inv_cdf(POWER)
        return math.ceil(2 * (z / self.d) ** 2) + 1


@dataclass
class Claim:
    """One row of the summary: the paper's claim, our numbers, the verdict (with its test, when two groups)."""

    claim: str
    ours: str
    verdict: str
    test: Welch | None = None
    decide: str = ""  # for a claim without a two-group test: what would decide it when inconclusive


def welch(a: list[float], b: list[float], *, higher_is_better: bool) -> Welch:
    """The test behind ``verdict``; groups of at least two values."""
    from scipy.stats import ttest_ind

    pooled = math.sqrt(((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b))
                       / (len(a) + len(b) - 2))
    diff = (statistics.mean(a) - statistics.mean(b)) * (1 if higher_is_better else -1)
    if pooled == 0:  # no variance on either side: the difference is exact
        p, p_opp = (0.0, 1.0) if diff > 0 else ((1.0, 0.0) if diff < 0 else (1.0, 1.0))
        return Welch(p, p_opp, math.copysign(math.inf, diff) if diff else 0.0, (len(a), len(b)))
    better, worse = ("greater", "less") if higher_is_better else ("less", "greater")
    p = float(ttest_ind(a, b, equal_var=False, alternative=better).pvalue)
    p_opp = float(ttest_ind(a, b, equal_var=False, alternative=worse).pvalue)
    return Welch(p, p_opp, diff / pooled, (len(a), len(b)))


@dataclass
class Reproduction:
    """Everything a reproduction measured: the report's only input."""

    scale_name: str
    scale: Scale
    command: str
    commit: str
    machine: dict[str, Any]
    mlflow_uri: str
    mlflow_run_id: str
    kl_cost: dict[str, dict[str, Any]]  # "K<steps>" -> ebm_eval.timing.kl_cost
    sweep_parent_run_id: str
    sweep_wall_s: float
    runs: list[RunResult]
    evaluations: Evaluations
    table4: dict[tuple[str, bool], Variant]
    wall_s: float = 0.0
    claims: list[Claim] = field(default_factory=list)


def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "n/a (no run)"
    vals = ", ".join(f"{v:.{digits}f}" for v in values)
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)}: {vals})"


def verdict(test: Welch | None) -> str:
    """"reproduced", "not reproduced" or "inconclusive" with p and d (see the module docstring for the rule)."""
    if test is None:
        return "inconclusive (fewer than 2 seeds)"
    stats = f"p = {test.p:.3g}, d = {test.d:.2f}"
    if test.p < ALPHA:
        return f"reproduced ({stats})"
    if test.p_opposite < ALPHA:
        return f"not reproduced (p = {test.p_opposite:.3g} the other way, d = {test.d:.2f})"
    return f"inconclusive ({stats})"


def compared(claim: str, ours: str, a: list[float], b: list[float], *, higher_is_better: bool) -> Claim:
    """One summary row: the paper's claim that A beats B, our numbers, and the verdict of Welch's test."""
    test = welch(a, b, higher_is_better=higher_is_better) if len(a) >= 2 and len(b) >= 2 else None
    return Claim(claim, ours, verdict(test), test)


def needed_scale(c: Claim, seeds: int) -> str:
    """What would decide an inconclusive claim, from its measured effect size and variance."""
    if c.test is None:
        return c.decide or "fewer than two runs a side: more seeds"
    n = c.test.seeds_needed()
    if n is None:
        what = "no difference was measured" if c.test.d == 0 else f"the measured effect goes the other way (d = {c.test.d:.2f})"
        return (f"{what}: more seeds at this scale would at best show that; the effect the paper reports needs longer "
                "training (the `full` scale) to appear, if at all")
    if n <= seeds:
        return f"d = {c.test.d:.2f}: {n} seeds per side should suffice; this run's spread was unlucky"
    return (f"d = {c.test.d:.2f}: about {n} seeds per side (this run: {c.test.n[0]} and {c.test.n[1]}) for 80 % power"
            + (" at this scale" if n <= 40 else "; an effect this small is better tested at a larger scale "
               "(longer training), where the paper measured it"))


def all_or_none(flags: list[bool]) -> str:
    """Verdict of a claim about every run: all agree it holds, none does, or they disagree."""
    if len(flags) < 2:
        return "inconclusive (fewer than 2 runs)"
    return "reproduced" if all(flags) else ("not reproduced" if not any(flags) else "inconclusive (runs disagree)")


def spike(history: list[dict[str, float]], *, iterations: int, diverged: bool, bound: float) -> float:
    """max |energy/diff| after the warm-up; a diverged run counts as the guard's bound."""
    if diverged:
        return bound
    vals = [abs(h["energy/diff"]) for h in history if "energy/diff" in h and h["step"] > WARMUP * iterations]
    return max(vals) if vals else float("nan")


def grad_ratio(history: list[dict[str, float]]) -> tuple[list[int], list[float]]:
    pts = [(h["step"], h["grad_norm/kl"] / h["grad_norm/cd"]) for h in history
           if h.get("grad_norm/cd") and "grad_norm/kl" in h]
    return [p[0] for p in pts], [p[1] for p in pts]


def fig8(runs: list[RunResult], path: Path, iterations: int) -> None:
    fig, axes = plt.subplots(1, len(FIG8), figsize=(3.2 * len(FIG8), 3.2), sharey=True)
    for ax, variant in zip(axes, FIG8):
        rs = runs_of(runs, variant)
        for r in rs:
            pts = [(h["step"], h["energy/diff"]) for h in r.history if "energy/diff" in h]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, label=f"seed {r.seed}")
        div = sum(r.diverged for r in rs)
        ax.axhline(0, color="grey", ls="--", lw=0.6)
        ax.axvline(WARMUP * iterations, color="grey", ls=":", lw=0.6)
        ax.set_title(f"{variant.name} ({div}/{len(rs)} diverged)", fontsize=9)
        ax.set_xlabel("iteration")
    axes[0].set_ylabel("energy/diff = E(x+) - E(x-)")
    axes[-1].legend(fontsize=7)
    _save(fig, path)


def fig9(runs: list[RunResult], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs:
        h = r.history
        steps = [x["step"] for x in h if "grad_norm/cd" in x]
        ax1.plot(steps, [x["grad_norm/cd"] for x in h if "grad_norm/cd" in x], color="C0", lw=0.7, alpha=0.7)
        ax1.plot(steps, [x["grad_norm/kl"] for x in h if "grad_norm/cd" in x], color="C1", lw=0.7, alpha=0.7)
        ax2.plot(*grad_ratio(h), lw=0.8, label=r.name)
    ax1.plot([], [], color="C0", label="L_CD")
    ax1.plot([], [], color="C1", label="L_KL")
    ax1.set_yscale("log")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("parameter-gradient norm")
    ax1.legend()
    ax2.set_yscale("log")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("grad_norm/kl / grad_norm/cd")
    ax2.legend(fontsize=6)
    _save(fig, path)


def table2_figure(fids: dict[Variant, list[float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, vals in enumerate(fids.values()):
        ax.scatter([i] * len(vals), vals, color="C0", s=14)
        if vals:
            ax.hlines(statistics.mean(vals), i - 0.25, i + 0.25, color="k")
    ax.set_xticks(range(len(fids)), [v.name for v in fids], fontsize=8)
    ax.set_ylabel("FID (domain classifier)")
    ax.set_title("Table 2 ablation: one point per seed, bar = mean")
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Claims: one function per claim family, from typed run results to claim rows with verdicts -----------------

def fid_key(runs: list[RunResult]) -> str:
    """The quality metric the sweep recorded: Inception FID if present, else FID-domain."""
    return next((k for r in runs for k in r.row if k.startswith("eval/fid")), "eval/fid_domain")


def table2_fids(runs: list[RunResult]) -> dict[Variant, list[float]]:
    key = fid_key(runs)
    return {v: [r.row[key] for r in runs_of(runs, v) if r.row.get(key) is not None] for v in TABLE2}


TABLE2_CLAIMS = (("data augmentation improves quality (Table 2)", TABLE2.aug, TABLE2.baseline),
                 ("multi-scale energy improves quality (Table 2)", TABLE2.aug_ms, TABLE2.aug),
                 ("L_opt improves quality (Table 2)", TABLE2.opt_aug_ms, TABLE2.aug_ms),
                 ("L_ent improves quality further (Table 2)", TABLE2.full, TABLE2.opt_aug_ms),
                 ("the KL term (L_opt + L_ent) gives a large gain (Table 2)", TABLE2.full, TABLE2.aug_ms))


def table2_claims(rep: Reproduction, cfg: Config) -> list[Claim]:
    fid = table2_fids(rep.runs)
    return [compared(claim, f"FID {a.name}: {fmt(fid[a], 2)}; {b.name}: {fmt(fid[b], 2)}", fid[a], fid[b],
                     higher_is_better=False) for claim, a, b in TABLE2_CLAIMS]


def fig8_spikes(runs: list[RunResult], cfg: Config) -> dict[Variant, list[float]]:
    t = cfg.train
    return {v: [spike(r.history, iterations=t.iterations, diverged=r.diverged, bound=t.energy_bound)
                for r in runs_of(runs, v)] for v in FIG8}


FIG8_CLAIMS = (("with L_KL, self-attention trains stably; without, it does not (Fig. 8)", FIG8.kl_attn, FIG8.no_kl_attn),
               ("spectral norm stabilises training without L_KL (Fig. 8)", FIG8.no_kl_sn, FIG8.no_kl),
               ("adding self-attention destabilises the spectral-norm model (Fig. 8)", FIG8.no_kl_sn, FIG8.sn_attn))


def fig8_claims(rep: Reproduction, cfg: Config) -> list[Claim]:
    sp = fig8_spikes(rep.runs, cfg)
    return [compared(claim, f"max abs energy/diff {a.name}: {fmt(sp[a], 4)}; {b.name}: {fmt(sp[b], 4)}", sp[a], sp[b],
                     higher_is_better=False) for claim, a, b in FIG8_CLAIMS]


def kl_runs(runs: list[RunResult]) -> list[RunResult]:
    """Runs trained with the KL term whose gradient norms Fig. 9 shows (Table 2's full row, Fig. 8's KL+attn)."""
    return [r for r in runs if TABLE2.full in r.roles or FIG8.kl_attn in r.roles]


def fig9_ratios(runs: list[RunResult]) -> tuple[list[float], list[float]]:
    """Per run: the median of grad_norm/kl / grad_norm/cd, and its late-half / early-half drift."""
    med, drift = [], []
    for r in kl_runs(runs):
        _, ratio = grad_ratio(r.history)
        ratio = [v for v in ratio if v > 0]  # before L_ent starts and with L_opt off, the KL gradient is 0
        if len(ratio) >= 4:
            half = len(ratio) // 2
            med.append(statistics.median(ratio))
            drift.append(statistics.median(ratio[half:]) / statistics.median(ratio[:half]))
    return med, drift


def fig9_claims(rep: Reproduction, cfg: Config) -> list[Claim]:
    med, drift = fig9_ratios(rep.runs)
    return [Claim("the KL gradient is non-negligible (Fig. 9)", f"median ratio kl/cd {fmt(med)} (threshold {RATIO_FLOOR})",
                  all_or_none([m >= RATIO_FLOOR for m in med])),
            Claim("the relative magnitude of the two gradients stays constant over training (Fig. 9)",
                  f"late/early median ratio {fmt(drift)} (constant: within 0.5-2)",
                  all_or_none([0.5 <= d <= 2 for d in drift]),
                  decide=f"{sum(0.5 <= d <= 2 for d in drift)} of {len(drift)} runs stay within 0.5-2; whether the ratio "
                         f"settles needs longer runs than {cfg.train.iterations} iterations (the paper's curves span "
                         "the whole of training)")]


def fig6_claims(rep: Reproduction, cfg: Config) -> list[Claim]:
    w, wo = [m.with_aug for m in rep.evaluations.mixing], [m.without_aug for m in rep.evaluations.mixing]
    return [compared("augmentation transitions let chains from one start reach different samples (Fig. 6)",
                     f"mean pairwise distance with {fmt(w, 4)} vs without {fmt(wo, 4)}", w, wo, higher_is_better=True)]


def fig7_claims(rep: Reproduction, cfg: Config) -> list[Claim]:
    ev = rep.evaluations
    full, base = [x.fid_domain for x in ev.lowtemp_full], [x.fid_domain for x in ev.lowtemp_baseline]
    return [compared("low-temperature samples stay data-like with KL + augmentation, not without (Fig. 7)",
                     f"FID-domain {fmt(full, 2)} vs baseline {fmt(base, 2)}", full, base, higher_is_better=False)]


def table3_claims(rep: Reproduction, cfg: Config) -> list[Claim]:
    a, b = ([x.table["average"]["energy"] for x in ood] for ood in (rep.evaluations.ood_kl, rep.evaluations.ood_no_kl))
    return [compared("the KL term improves OOD detection (Table 3; the paper credits better mode exploration)",
                     f"average AUROC with KL {fmt(a)} vs without {fmt(b)}", a, b, higher_is_better=True)]


def table4_claims(rep: Reproduction, cfg: Config) -> list[Claim]:
    ev = rep.evaluations
    a, b = ([c.rows[-1]["all"] for c in comp] for comp in (ev.composition_kl, ev.composition_no_kl))
    return [compared("compositional generation is more accurate with the improved training (Table 4)",
                     f"all {len(ev.composition_attributes)} attributes right: with KL {fmt(a)} vs without {fmt(b)}",
                     a, b, higher_is_better=True)]


def kl_cost_claims(rep: Reproduction, cfg: Config) -> list[Claim]:
    """Sec. 4: at most the paper's ~20 % at the largest K; the ratio's whole min-max range decides."""
    kc = rep.kl_cost
    keys = sorted(kc, key=lambda k: int(k[1:]))
    hi = kc[keys[-1]]["ratio"]
    return [Claim("the KL term costs about 20 % at K=60, less at more steps (Sec. 4)",
                  ", ".join(f"{k}: x{kc[k]['ratio']['median']:.3f}" for k in keys),
                  "reproduced (at most the paper's cost)" if hi["max"] <= 1.25 else
                  ("not reproduced" if hi["min"] > 1.25 else "inconclusive"),
                  decide=f"the timed ratios at {keys[-1]} range over {hi['min']:.2f}-{hi['max']:.2f}, across the 1.25 "
                         "bound: more timed steps on a quiet machine (`benchmarks/run.py`), or the GPU the paper timed on")]


CLAIMS: tuple[Callable[[Reproduction, Config], list[Claim]], ...] = (
    table2_claims, fig8_claims, fig9_claims, fig6_claims, fig7_claims, table3_claims, table4_claims, kl_cost_claims)


def analyse(rep: Reproduction, cfg: Config) -> list[Claim]:
    """Every claim of the paper this report checks, in report order."""
    return [c for claims in CLAIMS for c in claims(rep, cfg)]


# Sections: the tables and sentences of the report ----------------------------------------------------------

FIGURES = (("recognisability", "recognisability"), ("colour_distance", "colour distance"), ("precision", "precision"),
           ("recall", "recall"))  # ebm_eval.quality's figures beside FID in Table 2 (means over seeds)


def mean_of(rs: list[RunResult], key: str) -> str:
    vals = [r.row[key] for r in rs if r.row.get(key) is not None]
    return f"{statistics.mean(vals):.3f}" if vals else "n/a"


def table2_section(rep: Reproduction, cfg: Config) -> str:
    fid = table2_fids(rep.runs)
    lines = ["| row | L_opt | L_ent | aug | multi-scale | FID-domain (lower is better) | "
             + " | ".join(name for _, name in FIGURES) + " | stable (finished without diverging) |",
             "| --- " * (7 + len(FIGURES)) + "|"]
    for v in TABLE2:
        rs = runs_of(rep.runs, v)
        stable = len(rs) - sum(r.diverged for r in rs) - sum(not r.finished for r in rs)
        yes = lambda k: "x" if v.overrides[k] else ""  # noqa: E731
        lines.append(f"| {v.name} | {yes('loss.use_opt')} | {yes('loss.use_ent')} | {yes('augment.enabled')} | "
                     f"{yes('model.multiscale')} | {fmt(fid[v], 2)} | "
                     + " | ".join(mean_of(rs, f"eval/{k}") for k, _ in FIGURES) + f" | {stable}/{len(rs)} |")
    real = next((r.row for r in rep.runs if "real/fid_domain" in r.row), None)
    if real is not None:
        lines.append("| *held-out real images* | | | | | " + f"{real['real/fid_domain']:.2f} | "
                     + " | ".join(f"{real.get(f'real/{k}', float('nan')):.3f}" for k, _ in FIGURES) + " | |")
    return "\n".join(lines)


def fig8_section(rep: Reproduction, cfg: Config) -> str:
    sp = fig8_spikes(rep.runs, cfg)
    lines = ["| configuration | runs | diverged | max abs energy/diff after 20 % of training | final energy/diff |",
             "| --- | --- | --- | --- | --- |"]
    for v in FIG8:
        rs = runs_of(rep.runs, v)
        finals = [r.row["energy/diff"] for r in rs if r.row.get("energy/diff") is not None]
        lines.append(f"| {v.name} | {len(rs)} | {sum(r.diverged for r in rs)} | {fmt(sp[v], 4)} | {fmt(finals, 4)} |")
    return "\n".join(lines)


def fig9_section(rep: Reproduction, cfg: Config) -> str:
    runs = kl_runs(rep.runs)
    med, drift = fig9_ratios(rep.runs)
    return (f"Runs with the KL term ({len(runs)}: {', '.join(r.name for r in runs)}). Median "
            f"grad_norm/kl / grad_norm/cd per run: {fmt(med)}. Late-half median / early-half median: {fmt(drift)}.")


def fig6_section(rep: Reproduction, cfg: Config) -> str:
    mix = rep.evaluations.mixing
    return (f"Mean pairwise RMS distance of {rep.scale.mixing_chains} chains from one start "
            f"(opt+ent+aug+ms models, one per seed): with augmentation transitions {fmt([m.with_aug for m in mix], 4)}; "
            f"without {fmt([m.without_aug for m in mix], 4)}.")


def fig7_section(rep: Reproduction, cfg: Config) -> str:
    full, base = rep.evaluations.lowtemp_full, rep.evaluations.lowtemp_baseline
    return (f"{rep.scale.lowtemp_steps} noise-free steps from uniform noise. FID-domain to the data: with KL + "
            f"augmentation {fmt([x.fid_domain for x in full], 2)}; baseline (no KL, no augmentation) "
            f"{fmt([x.fid_domain for x in base], 2)}. Fraction of saturated pixels (<= 0.01 or >= 0.99): "
            f"{fmt([x.saturated for x in full])} vs {fmt([x.saturated for x in base])}.")


def table3_section(rep: Reproduction, cfg: Config) -> str:
    kl, no_kl = rep.evaluations.ood_kl, rep.evaluations.ood_no_kl
    lines = ["| OOD set | with KL: -E(x) | without KL: -E(x) | with KL: -grad norm | without KL: -grad norm |",
             "| --- | --- | --- | --- | --- |"]
    for s in (list(kl[0].table) if kl else []):
        col = lambda ood, score: fmt([x.table[s][score] for x in ood])  # noqa: E731
        lines.append(f"| {s} | {col(kl, 'energy')} | {col(no_kl, 'energy')} | {col(kl, 'grad_norm')} | "
                     f"{col(no_kl, 'grad_norm')} |")
    return "\n".join(lines)


def table4_section(rep: Reproduction, cfg: Config) -> str:
    ev = rep.evaluations
    attrs = ev.composition_attributes
    lines = ["| composed attributes | with KL: all correct | without KL: all correct |", "| --- | --- | --- |"]
    for k in range(len(attrs)):
        col = lambda comp: fmt([c.rows[k]["all"] for c in comp])  # noqa: E731
        lines.append(f"| {' & '.join(attrs[:k + 1])} | {col(ev.composition_kl)} | {col(ev.composition_no_kl)} |")
    return "\n".join(lines)


def kl_cost_section(rep: Reproduction, cfg: Config) -> str:
    lines = ["| K | with KL (s/step) | without KL (s/step) | ratio (median; min-max) |", "| --- | --- | --- | --- |"]
    for k, row in rep.kl_cost.items():
        r = row["ratio"]
        lines.append(f"| {k[1:]} | {row['with_kl']['median_s']:.3f} | {row['without_kl']['median_s']:.3f} | "
                     f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f}) |")
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[Reproduction, Config], str]] = {
    "table2": table2_section, "fig8": fig8_section, "fig9": fig9_section, "fig6": fig6_section,
    "fig7": fig7_section, "table3": table3_section, "table4": table4_section, "kl_cost": kl_cost_section}


def draw_figures(rep: Reproduction, cfg: Config, figures: Path) -> None:
    """Table 2, Fig. 8 and Fig. 9 from the runs (the Fig. 6-7 and Table 4 grids come with the evaluations)."""
    table2_figure(table2_fids(rep.runs), figures / "table2_quality.png")
    fig8(rep.runs, figures / "fig8_stability.png", cfg.train.iterations)
    fig9(kl_runs(rep.runs), figures / "fig9_grad_norms.png")


def write(rep: Reproduction, *, report: Path, config: Config) -> None:
    """The claims (into ``rep.claims``), the figures into ``results/`` beside the report, then the report itself."""
    figures = report.parent / "results"
    rep.claims = analyse(rep, config)
    draw_figures(rep, config, figures)
    md = {name: section(rep, config) for name, section in SECTIONS.items()}
    claims, runs, spec, ev = rep.claims, rep.runs, rep.scale, rep.evaluations
    rel = lambda name: f"results/{name}"  # noqa: E731
    counts = {v: sum(c.verdict.startswith(v) for c in claims) for v in ("reproduced", "not reproduced", "inconclusive")}
    comp_pngs = sorted(p.name for p in figures.glob("table4_composition_*.png"))
    text = f"""# Reproducing improved contrastive divergence (Du et al. 2021) at `{rep.scale_name}` scale

Written by `{rep.command}` at commit `{rep.commit}`, on {rep.machine['platform']}
(torch {rep.machine['torch']}, {rep.machine['threads']} threads, GPU: {rep.machine['gpu']}).
Wall time {rep.wall_s / 60:.1f} min: the sweep of {len(runs)} runs took {rep.sweep_wall_s / 60:.1f} min,
the evaluations {ev.wall_s / 60:.1f} min. MLflow: run `{rep.mlflow_run_id}` (the sweep's parent run
`{rep.sweep_parent_run_id}` is nested under it) at `{rep.mlflow_uri}`.

Scale: {spec.note}. Seeds per configuration: {spec.seeds} (composition: {spec.comp_seeds}).
Every number below comes from this run; no seed was dropped. Values are mean ± standard deviation
over seeds, followed by each seed's value. **Verdict rule** (fixed before the run): a claim "A beats B"
is *reproduced* when Welch's one-sided t-test gives p < {ALPHA} for the claimed direction, *not
reproduced* when it gives p < {ALPHA} for the opposite direction, and *inconclusive* otherwise (or
with fewer than 2 seeds). Each verdict shows p and the effect size d (Cohen's d, positive = the
claimed way); the last section says, per inconclusive claim, what it would take to decide it.
At this scale (minutes of CPU training on 16x16 shapes) many effects the paper reports after a
day of GPU training are not expected to show; an inconclusive verdict says exactly that.

## Summary: {counts['reproduced']} reproduced, {counts['not reproduced']} not reproduced, {counts['inconclusive']} inconclusive

| claim (paper) | here | verdict |
| --- | --- | --- |
""" + "\n".join(f"| {c.claim} | {c.ours} | **{c.verdict}** |" for c in claims) + f"""

## 1. Ablation (Table 2)

FID-domain and the quality figures of `ebm_eval.quality` ({config.jobs.quality_samples} EMA samples per run against 1 000
training images, by the shapes judge: test accuracy {ev.domain_classifier_accuracy}); the last row is the
mean of {HELD_OUT_SPLITS} held-out real splits of the same size measured the same way.

{md['table2']}

![Table 2]({rel('table2_quality.png')})

## 2. Stability (Fig. 8)

Runs diverge when |energy/pos| passes the guard's bound ({config.train.energy_bound}); a diverged run
counts as that bound in the spike column.

{md['fig8']}

![Fig. 8]({rel('fig8_stability.png')})

## 3. Gradient magnitudes (Fig. 9)

{md['fig9']}

![Fig. 9]({rel('fig9_grad_norms.png')})

## 4. Mixing with augmentation transitions (Fig. 6)

{md['fig6']} In the picture, each pair of rows is one seed's model: without transitions (upper),
with transitions (lower), every chain starting from the same noise image.

![Fig. 6]({rel('fig6_mixing.png')})

## 5. Low-temperature modes (Fig. 7)

{md['fig7']} Rows: baseline seeds first, then KL + augmentation seeds.

![Fig. 7]({rel('fig7_lowtemp.png')})

## 6. Out-of-distribution detection (Table 3)

AUROC, in-distribution = the embedded test images; with KL = `opt+ent+aug+ms`, without = `aug+ms`.

{md['table3']}

## 7. Compositional generation (Table 4)

Fraction of samples whose every conditioned attribute the domain classifier recovers (its
accuracy per attribute on real test images: {ev.domain_classifier_accuracy}).

{md['table4']}

""" + "\n".join(f"![{p}]({rel(p)})" for p in comp_pngs) + f"""

## 8. Cost of the KL term

Training-step time at batch {config.train.batch_size} on this machine's model, measured before the sweep with
nothing else running ({spec.kl_cost_repeats} timed steps after one warm-up). The `cifar10` preset model's
figures are in `benchmarks/results/core.json`.

{md['kl_cost']}

## 9. What would decide the inconclusive claims

Seeds per side for a one-sided Welch test at p < {ALPHA} with {POWER:.0%} power, if the true effect were
the one measured here (normal approximation, n = 2 (z_0.95 + z_0.8)^2 / d^2 + 1).

""" + "\n".join(f"- **{c.claim}**: {needed_scale(c, spec.seeds)}" for c in claims
            if c.verdict.startswith("inconclusive")) + f"""

## How to run it

    ebm reproduce --scale small      # this report, about 30 min on a 2-core CPU
    ebm reproduce --scale full       # the same stages on the cifar10 preset, for a GPU machine (data/cifar10 needed)

Base configuration (every run; each run's overrides are in `results.json` and its MLflow params):

```yaml
{config.to_yaml()}```
"""
    report.write_text(text)
