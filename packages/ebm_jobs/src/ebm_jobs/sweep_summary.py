"""What a sweep leaves on its parent MLflow run: the summary table (hyperparameters x final metrics) as a
Markdown file, JSON and an MLflow table, a parallel-coordinates plot of the hyperparameters against the quality
figure, and the ``best`` alias on the registered model of the best stable trial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient


QUALITY = ("eval/fid_domain", "energy/diff_max_abs_last_quarter")  # lower is better; the first one present decides


def status(row: dict[str, Any]) -> str:
    """'yes' (finished stable), 'no (diverged at N)', or 'stopped at N' (early stopping, errors)."""
    if row.get("diverged"):
        return f"no (diverged at {row.get('step', '?')})"
    if "run_id" in row:  # only the trial's final report carries it
        return "yes"
    return f"stopped at {row.get('step', '?')}" + (f" ({row['error']})" if row.get("error") else "")


FIGURES = ("fid_domain", "recognisability", "classes_present", "colour_distance", "precision", "recall",
           "shape_agreement")  # ebm_eval.quality's figures, as columns when the trials measured them


def summary_table(rows: list[dict[str, Any]]) -> str:
    """One line per trial (overrides, final energy/diff, stability, quality figures), then the held-out real
    splits' figures (their mean) as the yardstick."""
    figs = [f for f in FIGURES if any(f"eval/{f}" in r for r in rows)]
    cell = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    row = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731  (no empty column when there are no figures)
    lines = [row(["trial", "overrides", "final energy/diff", "max abs diff (last 1/4)", "stable", *figs]),
             row(["---"] * (5 + len(figs)))]
    for r in rows:
        diff, tail = r.get("energy/diff"), r.get("energy/diff_max_abs_last_quarter")
        lines.append(row([r["trial"], str(r["overrides"]), "n/a" if diff is None else f"{diff:.4f}",
                          "n/a" if tail is None else f"{tail:.4f}", status(r),
                          *(cell(r.get(f"eval/{f}")) for f in figs)]))
    real = next((r for r in rows if any(k.startswith("real/") for k in r)), None)
    if real is not None and figs:
        lines.append(row(["*held-out real images*", "", "", "", "", *(cell(real.get(f"real/{f}")) for f in figs)]))
    return "\n".join(lines)


def quality_key(rows: list[dict[str, Any]]) -> str | None:
    """The quality figure the sweep ranks by: FID-domain when the trials measured it, else stability."""
    return next((k for k in QUALITY if any(k in r for r in rows)), None)


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stable, finished trial with the lowest quality figure."""
    key = quality_key(rows)
    done = [r for r in rows if status(r) == "yes" and key in r]
    return min(done, key=lambda r: r[key]) if done else None


def parallel_coordinates(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """One line per trial across its numeric hyperparameters and the quality figure, each axis scaled to [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = quality_key(rows)
    done = [r for r in rows if key in r]
    if not done or key is None:
        return None
    overrides = [json.loads(r["overrides"]) for r in done]

    def number(v: Any) -> float | None:  # booleans (ablation switches) as 0/1; None and text are not drawn
        return float(v) if isinstance(v, (int, float)) else None

    params = sorted(k for k in set().union(*overrides)  # the numeric hyperparameters that vary between trials
                    if all(number(o.get(k)) is not None for o in overrides) and len({number(o[k]) for o in overrides}) > 1)
    axes = params + [key]
    table = [[number(o[p]) for p in params] + [r[key]] for o, r in zip(overrides, done)]
    lo = [min(c) for c in zip(*table)]
    hi = [max(c) for c in zip(*table)]
    fig, ax = plt.subplots(figsize=(2.2 * len(axes) + 2, 4.5))
    cmap = plt.get_cmap("viridis")  # low (better) is dark
    for r, values in zip(done, table):
        y = [(v - a) / (b - a) if b > a else 0.5 for v, a, b in zip(values, lo, hi)]
        ax.plot(range(len(axes)), y, marker="o", color=cmap(y[-1]), label=r["trial"][:40])
    ax.set_xticks(range(len(axes)), [f"{a}\n[{x:.3g}, {z:.3g}]" for a, x, z in zip(axes, lo, hi)], fontsize=8)
    ax.set_yticks([])
    ax.set_title(f"trials: hyperparameters and {key} (lower is better, darker)")
    if len(done) <= 12:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_summary(client: MlflowClient, parent_id: str, rows: list[dict[str, Any]], local: Path) -> dict[str, Any] | None:
    """Write and log the summary; set ``best`` on the registered model of the best trial. Returns that trial's row."""
    import pandas as pd

    (local / "summary.md").write_text(summary_table(rows) + "\n")
    (local / "summary.json").write_text(json.dumps(rows, indent=2))
    client.log_artifact(parent_id, str(local / "summary.md"))
    client.log_artifact(parent_id, str(local / "summary.json"))
    frame = pd.DataFrame([{"trial": r["trial"], **json.loads(r["overrides"]), "stable": status(r),
                           **{k: v for k, v in r.items() if k not in ("trial", "overrides", "error")}} for r in rows])
    client.log_table(parent_id, data=frame, artifact_file="summary_table.json")  # the UI's table view
    plot = parallel_coordinates(rows, local / "parallel_coordinates.png")
    if plot is not None:
        client.log_artifact(parent_id, str(plot))
    best = best_row(rows)
    if best is not None:
        registered = client.get_run(best["run_id"]).data.tags.get("registered_model", "")  # models:/<name>/<version>
        if registered.startswith("models:/"):
            name, version = registered.removeprefix("models:/").rsplit("/", 1)
            client.set_registered_model_alias(name, "best", version)
            client.set_tag(parent_id, "best_model", f"models:/{name}@best (version {version}, trial {best['trial']})")
    return best
