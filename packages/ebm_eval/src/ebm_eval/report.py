"""The reproduction report: curves drawn from the runs, one verdict per claim, ``RESULTS.md``.

A verdict compares two groups of per-seed numbers (claim: A beats B). "reproduced": the mean
difference goes the claimed way by more than twice its standard error; "not reproduced": it goes
the other way by as much; "inconclusive": anything in between, or fewer than two seeds a side.
Every number comes from the run that this report describes; no seed is dropped.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ebm_core.config import Config  # noqa: E402

from .evaluations import runs_of  # noqa: E402
from .reproduce import STABILITY  # noqa: E402

WARMUP = 0.2  # Fig. 8's spike measure ignores the first 20 % of iterations
RATIO_FLOOR = 0.05  # Fig. 9: "non-negligible" means grad_norm/kl >= 5 % of grad_norm/cd here


def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "n/a (no run)"
    vals = ", ".join(f"{v:.{digits}f}" for v in values)
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)}: {vals})"


def verdict(a: list[float], b: list[float], *, higher_is_better: bool) -> str:
    """Claim: group ``a`` beats group ``b`` (see the module docstring for the rule)."""
    if len(a) < 2 or len(b) < 2:
        return "inconclusive (fewer than 2 seeds)"
    d = statistics.mean(a) - statistics.mean(b)
    d = d if higher_is_better else -d
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    if d > 2 * se and d > 0:
        return "reproduced"
    if d < -2 * se and d < 0:
        return "not reproduced"
    return "inconclusive"


def compared(claim: str, ours: str, a: list[float], b: list[float], *, higher_is_better: bool) -> dict[str, str]:
    """One summary row: the paper's claim that A beats B, our numbers, and the verdict."""
    return {"claim": claim, "ours": ours, "verdict": verdict(a, b, higher_is_better=higher_is_better)}


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


def fig8(runs: list[dict], path: Path, iterations: int) -> None:
    fig, axes = plt.subplots(1, len(STABILITY), figsize=(3.2 * len(STABILITY), 3.2), sharey=True)
    for ax, (label, _) in zip(axes, STABILITY):
        rs = runs_of(runs, "fig8", label)
        for r in rs:
            pts = [(h["step"], h["energy/diff"]) for h in r["history"] if "energy/diff" in h]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, label=f"seed {r['seed']}")
        div = sum(bool(r["row"].get("diverged")) for r in rs)
        ax.axhline(0, color="grey", ls="--", lw=0.6)
        ax.axvline(WARMUP * iterations, color="grey", ls=":", lw=0.6)
        ax.set_title(f"{label} ({div}/{len(rs)} diverged)", fontsize=9)
        ax.set_xlabel("iteration")
    axes[0].set_ylabel("energy/diff = E(x+) - E(x-)")
    axes[-1].legend(fontsize=7)
    _save(fig, path)


def fig9(runs: list[dict], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs:
        h = r["history"]
        steps = [x["step"] for x in h if "grad_norm/cd" in x]
        ax1.plot(steps, [x["grad_norm/cd"] for x in h if "grad_norm/cd" in x], color="C0", lw=0.7, alpha=0.7)
        ax1.plot(steps, [x["grad_norm/kl"] for x in h if "grad_norm/cd" in x], color="C1", lw=0.7, alpha=0.7)
        ax2.plot(*grad_ratio(h), lw=0.8, label=r["name"])
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


def table2_figure(rows: dict[str, dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, (label, row) in enumerate(rows.items()):
        ax.scatter([i] * len(row["fid"]), row["fid"], color="C0", s=14)
        if row["fid"]:
            ax.hlines(statistics.mean(row["fid"]), i - 0.25, i + 0.25, color="k")
    ax.set_xticks(range(len(rows)), list(rows), fontsize=8)
    ax.set_ylabel("FID (domain classifier)")
    ax.set_title("Table 2 ablation: one point per seed, bar = mean")
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def analyse(results: dict[str, Any], runs: list[dict], cfg: Config, figures: Path) -> tuple[list[dict], dict[str, str]]:
    """Claims with their numbers and verdicts, and the markdown sections (figures written as a side effect)."""
    from ebm_jobs.sweep import ABLATION

    iters, bound = cfg.train.iterations, cfg.train.energy_bound
    ev, claims, md = results["evaluations"], [], {}
    fid_key = next((k for r in runs for k in r["row"] if k.startswith("eval/fid")), "eval/fid_domain")

    # Table 2 ---------------------------------------------------------------------------------------
    t2 = {}
    for label, over in ABLATION:
        rs = runs_of(runs, "table2", label)
        t2[label] = {"fid": [r["row"][fid_key] for r in rs if r["row"].get(fid_key) is not None],
                     "diverged": sum(bool(r["row"].get("diverged")) for r in rs), "n": len(rs),
                     "failed": sum(1 for r in rs if "run_id" not in r["row"]), "overrides": over}
    table2_figure(t2, figures / "table2_quality.png")
    lines = ["| row | L_opt | L_ent | aug | multi-scale | FID-domain (lower is better) | stable (finished without diverging) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, row in t2.items():
        o = row["overrides"]
        yes = lambda k: "x" if o[k] else ""  # noqa: E731
        lines.append(f"| {label} | {yes('loss.use_opt')} | {yes('loss.use_ent')} | {yes('augment.enabled')} | "
                     f"{yes('model.multiscale')} | {fmt(row['fid'], 2)} | {row['n'] - row['diverged'] - row['failed']}/{row['n']} |")
    md["table2"] = "\n".join(lines)
    for claim, a, b in (("data augmentation improves quality (Table 2)", "aug", "baseline"),
                        ("multi-scale energy improves quality (Table 2)", "aug+ms", "aug"),
                        ("L_opt improves quality (Table 2)", "opt+aug+ms", "aug+ms"),
                        ("L_ent improves quality further (Table 2)", "opt+ent+aug+ms", "opt+aug+ms"),
                        ("the KL term (L_opt + L_ent) gives a large gain (Table 2)", "opt+ent+aug+ms", "aug+ms")):
        claims.append(compared(claim, f"FID {a}: {fmt(t2[a]['fid'], 2)}; {b}: {fmt(t2[b]['fid'], 2)}",
                               t2[a]["fid"], t2[b]["fid"], higher_is_better=False))

    # Fig. 8 ----------------------------------------------------------------------------------------
    fig8(runs, figures / "fig8_stability.png", iters)
    sp, lines = {}, ["| configuration | runs | diverged | max abs energy/diff after 20 % of training | final energy/diff |",
                     "| --- | --- | --- | --- | --- |"]
    for label, _ in STABILITY:
        rs = runs_of(runs, "fig8", label)
        sp[label] = [spike(r["history"], iterations=iters, diverged=bool(r["row"].get("diverged")), bound=bound) for r in rs]
        finals = [r["row"]["energy/diff"] for r in rs if r["row"].get("energy/diff") is not None]
        lines.append(f"| {label} | {len(rs)} | {sum(bool(r['row'].get('diverged')) for r in rs)} | {fmt(sp[label], 4)} | "
                     f"{fmt(finals, 4)} |")
    md["fig8"] = "\n".join(lines)
    for claim, a, b in (("with L_KL, self-attention trains stably; without, it does not (Fig. 8)", "KL+attn", "noKL+attn"),
                        ("spectral norm stabilises training without L_KL (Fig. 8)", "noKL+SN", "noKL"),
                        ("adding self-attention destabilises the spectral-norm model (Fig. 8)", "noKL+SN", "SN+attn")):
        claims.append(compared(claim, f"max abs energy/diff {a}: {fmt(sp[a], 4)}; {b}: {fmt(sp[b], 4)}",
                               sp[a], sp[b], higher_is_better=False))

    # Fig. 9 ----------------------------------------------------------------------------------------
    kl_runs = [r for r in runs if any(g in ("table2", "fig8") and lab in ("opt+ent+aug+ms", "KL+attn")
                                      for g, lab in r["roles"])]
    fig9(kl_runs, figures / "fig9_grad_norms.png")
    med, drift = [], []
    for r in kl_runs:
        _, ratio = grad_ratio(r["history"])
        ratio = [v for v in ratio if v > 0]  # before L_ent starts and with L_opt off, the KL gradient is 0
        if len(ratio) >= 4:
            half = len(ratio) // 2
            med.append(statistics.median(ratio))
            drift.append(statistics.median(ratio[half:]) / statistics.median(ratio[:half]))
    md["fig9"] = (f"Runs with the KL term ({len(kl_runs)}: {', '.join(r['name'] for r in kl_runs)}). Median "
                  f"grad_norm/kl / grad_norm/cd per run: {fmt(med)}. Late-half median / early-half median: {fmt(drift)}.")
    claims.append({"claim": "the KL gradient is non-negligible (Fig. 9)",
                   "ours": f"median ratio kl/cd {fmt(med)} (threshold {RATIO_FLOOR})",
                   "verdict": _all_or_none([m >= RATIO_FLOOR for m in med])})
    claims.append({"claim": "the relative magnitude of the two gradients stays constant over training (Fig. 9)",
                   "ours": f"late/early median ratio {fmt(drift)} (constant: within 0.5-2)",
                   "verdict": _all_or_none([0.5 <= d <= 2 for d in drift])})

    # Fig. 6, Fig. 7 --------------------------------------------------------------------------------
    mix = ev["mixing"]
    w, wo = [m["with_aug"] for m in mix], [m["without_aug"] for m in mix]
    md["fig6"] = (f"Mean pairwise RMS distance of {results['scale_spec']['mixing_chains']} chains from one start "
                  f"(opt+ent+aug+ms models, one per seed): with augmentation transitions {fmt(w, 4)}; "
                  f"without {fmt(wo, 4)}.")
    claims.append(compared("augmentation transitions let chains from one start reach different samples (Fig. 6)",
                           f"mean pairwise distance with {fmt(w, 4)} vs without {fmt(wo, 4)}", w, wo,
                           higher_is_better=True))
    lt = ev["lowtemp"]
    f_full, f_base = [x["fid_domain"] for x in lt["opt+ent+aug+ms"]], [x["fid_domain"] for x in lt["baseline"]]
    s_full, s_base = [x["saturated"] for x in lt["opt+ent+aug+ms"]], [x["saturated"] for x in lt["baseline"]]
    md["fig7"] = (f"{results['scale_spec']['lowtemp_steps']} noise-free steps from uniform noise. FID-domain to the "
                  f"data: with KL + augmentation {fmt(f_full, 2)}; baseline (no KL, no augmentation) {fmt(f_base, 2)}. "
                  f"Fraction of saturated pixels (<= 0.01 or >= 0.99): {fmt(s_full)} vs {fmt(s_base)}.")
    claims.append(compared("low-temperature samples stay data-like with KL + augmentation, not without (Fig. 7)",
                           f"FID-domain {fmt(f_full, 2)} vs baseline {fmt(f_base, 2)}", f_full, f_base,
                           higher_is_better=False))

    # Table 3, Table 4 ------------------------------------------------------------------------------
    ood = ev["ood"]
    sets = list(ood["KL"][0]["table"]) if ood["KL"] else []
    lines = ["| OOD set | with KL: -E(x) | without KL: -E(x) | with KL: -grad norm | without KL: -grad norm |",
             "| --- | --- | --- | --- | --- |"]
    for s in sets:
        col = lambda k, score: fmt([x["table"][s][score] for x in ood[k]])  # noqa: E731
        lines.append(f"| {s} | {col('KL', 'energy')} | {col('noKL', 'energy')} | {col('KL', 'grad_norm')} | "
                     f"{col('noKL', 'grad_norm')} |")
    md["table3"] = "\n".join(lines)
    a, b = ([x["table"]["average"]["energy"] for x in ood[k]] for k in ("KL", "noKL"))
    claims.append(compared("the KL term improves OOD detection (Table 3; the paper credits better mode exploration)",
                           f"average AUROC with KL {fmt(a)} vs without {fmt(b)}", a, b, higher_is_better=True))
    comp = ev["composition"]
    attrs = comp["attributes"]
    lines = ["| composed attributes | with KL: all correct | without KL: all correct |", "| --- | --- | --- |"]
    for k in range(len(attrs)):
        col = lambda key: fmt([c["rows"][k]["all"] for c in comp[key]])  # noqa: E731
        lines.append(f"| {' & '.join(attrs[:k + 1])} | {col('KL')} | {col('noKL')} |")
    md["table4"] = "\n".join(lines)
    a, b = ([c["rows"][-1]["all"] for c in comp[k]] for k in ("KL", "noKL"))
    claims.append(compared("compositional generation is more accurate with the improved training (Table 4)",
                           f"all {len(attrs)} attributes right: with KL {fmt(a)} vs without {fmt(b)}", a, b,
                           higher_is_better=True))

    # KL cost ---------------------------------------------------------------------------------------
    kc = results["kl_cost"]
    lines = ["| K | with KL (s/step) | without KL (s/step) | ratio (median; min-max) |", "| --- | --- | --- | --- |"]
    for k, row in kc.items():
        lines.append(f"| {k[1:]} | {row['with_kl']['median_s']:.3f} | {row['without_kl']['median_s']:.3f} | "
                     f"{row['ratio']:.3f} ({row['ratio_range'][0]:.3f}-{row['ratio_range'][1]:.3f}) |")
    md["kl_cost"] = "\n".join(lines)
    keys = sorted(kc, key=lambda k: int(k[1:]))
    hi = kc[keys[-1]]
    ok = hi["ratio_range"][1] <= 1.25
    claims.append({"claim": "the KL term costs about 20 % at K=60, less at more steps (Sec. 4)",
                   "ours": ", ".join(f"{k}: x{kc[k]['ratio']:.3f}" for k in keys),
                   "verdict": "reproduced (at most the paper's cost)" if ok else
                   ("not reproduced" if hi["ratio_range"][0] > 1.25 else "inconclusive")})
    return claims, md


def _all_or_none(flags: list[bool]) -> str:
    if len(flags) < 2:
        return "inconclusive (fewer than 2 runs)"
    return "reproduced" if all(flags) else ("not reproduced" if not any(flags) else "inconclusive (runs disagree)")


def write(results: dict[str, Any], runs: list[dict], *, report: Path, config: Config) -> None:
    """Figures into ``results/`` beside the report, then the report itself."""
    figures = report.parent / "results"
    claims, md = analyse(results, runs, config, figures)
    results["claims"] = claims
    rel = lambda name: f"results/{name}"  # noqa: E731
    spec = results["scale_spec"]
    counts = {v: sum(c["verdict"].startswith(v) for c in claims) for v in ("reproduced", "not reproduced", "inconclusive")}
    ev = results["evaluations"]
    sw = results["sweep"]
    comp_pngs = sorted(p.name for p in figures.glob("table4_composition_*.png"))
    text = f"""# Reproducing improved contrastive divergence (Du et al. 2021) at `{results['scale']}` scale

Written by `{results['command']}` at commit `{results['commit']}`, on {results['machine']['platform']}
(torch {results['machine']['torch']}, {results['machine']['threads']} threads, GPU: {results['machine']['gpu']}).
Wall time {results['wall_s'] / 60:.1f} min: the sweep of {len(runs)} runs took {sw['wall_s'] / 60:.1f} min,
the evaluations {ev['wall_s'] / 60:.1f} min. MLflow: run `{results['mlflow']['run_id']}` (the sweep's parent run
`{sw['parent_run_id']}` is nested under it) at `{results['mlflow']['uri']}`.

Scale: {spec['note']}. Seeds per configuration: {spec['seeds']} (composition: {spec['comp_seeds']}).
Every number below comes from this run; no seed was dropped. Values are mean ± standard deviation
over seeds, followed by each seed's value. **Verdict rule:** a claim "A beats B" is *reproduced* when
the mean difference goes the claimed way by more than twice its standard error, *not reproduced*
when it goes the other way by as much, and *inconclusive* otherwise (or with fewer than 2 seeds).
At this scale (minutes of CPU training on 16x16 shapes) many effects the paper reports after a
day of GPU training are not expected to show; an inconclusive verdict says exactly that.

## Summary: {counts['reproduced']} reproduced, {counts['not reproduced']} not reproduced, {counts['inconclusive']} inconclusive

| claim (paper) | here | verdict |
| --- | --- | --- |
""" + "\n".join(f"| {c['claim']} | {c['ours']} | **{c['verdict']}** |" for c in claims) + f"""

## 1. Ablation (Table 2)

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
accuracy per attribute on real test images: {ev['domain_classifier_accuracy']}).

{md['table4']}

""" + "\n".join(f"![{p}]({rel(p)})" for p in comp_pngs) + f"""

## 8. Cost of the KL term

Training-step time at batch {config.train.batch_size} on this machine's model, measured before the sweep with
nothing else running ({spec['kl_cost_repeats']} timed steps after one warm-up). The `cifar10` preset model's
figures are in `benchmarks/results/core.json`.

{md['kl_cost']}

## How to run it

    ebm reproduce --scale small      # this report, < 60 min on a 2-core CPU
    ebm reproduce --scale full       # the same stages on the cifar10 preset, for a GPU machine (data/cifar10 needed)

Base configuration (every run; each run's overrides are in `results.json` and its MLflow params):

```yaml
{config.to_yaml()}```
"""
    report.write_text(text)


def log_to_mlflow(uri: str, run_id: str, results: dict[str, Any], report: Path) -> None:
    """The report, its figures and the verdict counts on the reproduce run, which then ends."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.log_artifact(run_id, str(report))
    client.log_artifacts(run_id, str(report.parent / "results"), artifact_path="results")
    client.log_text(run_id, json.dumps(results, indent=2, default=str), "results.json")
    for v in ("reproduced", "not reproduced", "inconclusive"):
        client.log_metric(run_id, f"claims/{v.replace(' ', '_')}", sum(c["verdict"].startswith(v) for c in results["claims"]))
    for k, row in results["kl_cost"].items():
        client.log_metric(run_id, f"kl_cost/{k}", row["ratio"])
    client.set_terminated(run_id, "FINISHED")
