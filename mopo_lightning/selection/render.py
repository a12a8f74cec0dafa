"""``select``'s output: Markdown tables, one estimate-against-truth figure per estimator, select.json."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

UNITS = "D4RL normalised score"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _groups(selection: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in selection["candidates"]:
        groups[row["group"]].append(row)
    return groups


def uncertainty(chosen: list[dict[str, Any]], by: str) -> list[str]:
    """The choice and how sure it is: the spread of its estimate across the model's elites (or FQE's across
    start states)."""
    if not chosen:
        return ["No choice: no candidate has this estimate."]
    row = chosen[0]
    name = Path(row["run"]).name + ("" if row["epoch"] is None else f" epoch {row['epoch']}")
    value = row["estimates"][by]
    if "details" not in row:
        return [f"Chosen: {name}, `{by}` {value:.2f}."]
    if by == "fqe":
        fqe = row["details"]["fqe"]
        return [f"Chosen: {name}, `fqe` {value:.2f} (Q over {fqe['start_states']} start states: std "
                f"{fqe['value_std']:.2f} in discounted-value units; {fqe['updates']} updates)."]
    mv = row["details"]["eval_model" if by.startswith("eval") else "own_model"]
    unit = "normalized" if mv["normalized_mean"] is not None else "return"
    return [f"Chosen: {name}, `{by}` {value:.2f}; across the {len(mv['per_member'])} elites: mean "
            f"{mv[f'{unit}_mean']:.2f}, std {mv[f'{unit}_std']:.2f}, min {mv[f'{unit}_min']:.2f} "
            f"({mv['starts']} start states, episodes of {mv['episode_steps']:.0f} steps on average)."]


def markdown(selection: dict[str, Any]) -> str:
    """The selection: per dataset every candidate's estimates and the choice; then, where online scores exist,
    each estimator's DOPE metrics and the online score of its choice beside the best candidate's."""
    config, names = selection["config"], list(selection["estimators"])
    by = config["choose_by"]
    lines = [f"# Offline selection: chosen by `{by}` ({selection['estimators'].get(by, 'not computed')})", "",
             "Estimators (no real environment, no online score read while choosing):", ""]
    lines += [f"- `{name}`: {text}" for name, text in selection["estimators"].items()]
    mv = config["estimators"]["model_value"]
    lines += ["", f"Model values: {mv['horizon']}-step rollouts from up to {mv['max_starts']} of the data's episode "
              f"start states, members' {mv['mode']}s, {mv['members']}; evaluation model seed "
              f"{config['evaluation_seed']}. Candidates: {config['candidates']}.", ""]
    for group, models in selection["evaluation_models"].items():
        if "error" in models:
            lines.append(f"Evaluation model of {group}: not available ({models['error']}).")
        else:
            how = "loaded from the cache" if models["loaded"] else "trained into the cache"
            lines.append(f"Evaluation model of {group}: seed {models['seed']}, {how} ({models['checkpoint']}).")
    lines.append("")
    for group, rows in _groups(selection).items():
        lines += [f"## {group}", "", "| candidate | method | seed | " + " | ".join(f"`{n}`" for n in names)
                  + " | chosen |", "|---|---|---|" + "---|" * len(names) + "---|"]
        for row in rows:
            epoch = "" if row["epoch"] is None else f" epoch {row['epoch']}"
            cells = ([_number(row["estimates"].get(n)) for n in names] if "error" not in row
                     else [f"failed: {row['error']}"] + [""] * (len(names) - 1))
            lines.append(f"| {Path(row['run']).name}{epoch} | {row['method']} | {row['seed']} | "
                         + " | ".join(cells) + (" | **chosen** |" if row["chosen"] else " | |"))
        lines += ["", *uncertainty([r for r in rows if r["chosen"]], by), ""]
    if metrics := selection["metrics"]:
        lines += ["## Against the online scores (read after choosing)", "",
                  "The online score: the run's evaluation of that policy in the real environment "
                  f"(final candidates: the mean of the run's last {config['last']} evaluation(s)). Regret@k: "
                  "(best true - best true among the top k by estimate) / (best true - worst true), DOPE's "
                  "normalisation; pooled: the mean over datasets.", "",
                  "| estimator | dataset | n | Spearman | regret@1 | regret@3 | MAE | chosen's online | best online |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, m in metrics.items():
            for g in m["groups"]:
                lines.append(f"| `{name}` | {g['group']} | {g['n']} | {_number(g['spearman'])} | "
                             f"{_number(g['regret']['1'])} | {_number(g['regret'].get('3'))} | "
                             f"{_number(g['mean_absolute_error'])} | {_number(g['chosen_online'])} | "
                             f"{_number(g['best_online'])} |")
            lines.append(f"| `{name}` | pooled ({m['n_groups']} datasets) | | {_number(m['spearman']['mean'])} | "
                         f"{_number(m['regret']['1']['mean'])} | {_number(m['regret'].get('3', {}).get('mean'))} | "
                         f"{_number(m['mean_absolute_error']['mean'])} | | |")
        lines.append("")
    if selection["left_out"]:
        lines += [f"Left out: {len(selection['left_out'])} run(s): "
                  + "; ".join(f"{r['run']}: {r['reason']}" for r in selection["left_out"]), ""]
    return "\n".join(lines)


def figures(selection: dict[str, Any], out: Path) -> list[Path]:
    """One scatter per estimator: estimate against online score, a colour per dataset, the line y = x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    groups = _groups(selection)
    for name in selection["estimators"]:
        points = {g: [(r["estimates"][name], r["online"]) for r in rows
                      if r["online"] is not None and r["estimates"].get(name) is not None]
                  for g, rows in groups.items()}
        if not any(points.values()):
            continue
        fig, ax = plt.subplots(figsize=(5, 4.5))
        everything = [v for pts in points.values() for p in pts for v in p]
        low, high = min(everything), max(everything)
        ax.plot([low, high], [low, high], color="grey", lw=0.8, ls="--", label="estimate = online")
        for group, pts in points.items():
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=14, label=f"{group} (n={len(pts)})")
        chosen = [(r["estimates"][name], r["online"]) for rows in groups.values() for r in rows
                  if r["online"] is not None and r["candidate"] in selection["choices"][name].values()]
        if chosen:
            ax.scatter(*zip(*chosen, strict=True), s=80, facecolors="none", edgecolors="black", label="its choice")
        ax.set_xlabel(f"offline estimate `{name}` ({UNITS})")
        ax.set_ylabel(f"online score ({UNITS}, real env)")
        ax.set_title(selection["estimators"][name], fontsize=8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"estimate_vs_online_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(selection: dict[str, Any], out: str | Path) -> None:
    """select.json, select.md and the figures in ``out``."""
    from mopo_lightning.files import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = figures(selection, out)
    text = markdown(selection) + "".join(f"\n![{p.stem}]({p.name})\n" for p in written)
    write_text_atomic(out / "select.json", json.dumps(selection, indent=1) + "\n")
    write_text_atomic(out / "select.md", text)
