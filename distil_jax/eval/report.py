"""Markdown tables laid out like the paper's: Table 1 (GLUE dev) and Table 2 (IMDb,
SQuAD), teacher and student side by side with the student's retention in %.

Each task's cell is its score: the metric, or the mean of its two metrics
(MRPC and QQP F1/accuracy, STS-B Pearson/Spearman, MNLI matched/mismatched),
GLUE's convention; the details table lists every metric. The paper does not
say which of the two it prints for those tasks, so compare them with care.
"""

from __future__ import annotations

import os

from distil_jax.eval.metrics import macro_score
from distil_jax.eval.tasks import GLUE_TASKS, TASKS

# DESIGN.md §1.6: the published dev-set figures (median of 5 seeds).
PAPER_TABLE1 = {
    "BERT-base (paper)": [79.5, 56.3, 86.7, 88.6, 91.8, 89.6, 69.3, 92.7, 89.0, 53.5],
    "DistilBERT (paper)": [77.0, 51.3, 82.2, 87.5, 89.2, 88.5, 59.9, 91.3, 86.9, 56.3],
}
PAPER_TABLE1_ORDER = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli")
PAPER_TABLE2 = {
    "BERT-base (paper)": ("93.46", "81.2/88.5"),
    "DistilBERT (paper)": ("92.82", "77.7/85.8"),
}
MISSING = "–"


def _fmt(value: float | None, digits: int = 1) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _label(role: str, entry: dict) -> str:
    return f"{role} ({os.path.basename(os.path.normpath(entry['model_dir']))})"


def _retention(student: float | None, teacher: float | None) -> str:
    if student is None or teacher is None or teacher == 0:
        return MISSING
    return f"{100.0 * student / teacher:.1f}"


def _glue_scores(entry: dict) -> dict[str, float]:
    return {t: entry["tasks"][t]["score"] for t in GLUE_TASKS if t in entry["tasks"]}


def table1(results: dict, include_paper: bool = True) -> str:
    """GLUE dev: macro score then one column per task, in the paper's order."""
    header = ["model", "score", *(TASKS[t].display for t in PAPER_TABLE1_ORDER)]
    lines = [_row(header), _row(["---"] * len(header))]
    if include_paper:
        for name, values in PAPER_TABLE1.items():
            lines.append(_row([f"*{name}*", *(f"*{v}*" for v in values)]))
    per_role = {}
    partial = False
    for role, entry in results["models"].items():
        scores = _glue_scores(entry)
        if not scores:
            continue
        partial |= len(scores) < len(GLUE_TASKS)
        per_role[role] = [macro_score(scores), *(scores.get(t) for t in PAPER_TABLE1_ORDER)]
        lines.append(_row([_label(role, entry), *(_fmt(v) for v in per_role[role])]))
    if "teacher" in per_role and "student" in per_role:
        pairs = zip(per_role["student"], per_role["teacher"], strict=True)
        lines.append(_row(["student retention (%)", *(_retention(s, t) for s, t in pairs)]))
    if partial:
        lines.append("")
        lines.append(
            "Score: macro average over the GLUE tasks that were run (not all nine), so it is "
            "not comparable with the paper's score."
        )
    return "\n".join(lines)


def _table2_cells(entry: dict) -> tuple[float | None, tuple[float, float] | None]:
    imdb = entry["tasks"].get("imdb")
    squad = entry["tasks"].get("squad")
    squad_values = (squad["metrics"]["exact_match"], squad["metrics"]["f1"]) if squad else None
    return (imdb["score"] if imdb else None), squad_values


def table2(results: dict, include_paper: bool = True) -> str:
    """IMDb test accuracy and SQuAD v1.1 dev EM/F1."""
    lines = [_row(["model", "IMDb (acc.)", "SQuAD (EM/F1)"]), _row(["---"] * 3)]
    if include_paper:
        for name, (imdb, squad) in PAPER_TABLE2.items():
            lines.append(_row([f"*{name}*", f"*{imdb}*", f"*{squad}*"]))
    cells = {}
    for role, entry in results["models"].items():
        imdb, squad = _table2_cells(entry)
        if imdb is None and squad is None:
            continue
        cells[role] = (imdb, squad)
        squad_text = MISSING if squad is None else f"{squad[0]:.1f}/{squad[1]:.1f}"
        lines.append(_row([_label(role, entry), _fmt(imdb, 2), squad_text]))
    if "teacher" in cells and "student" in cells:
        (s_imdb, s_squad), (t_imdb, t_squad) = cells["student"], cells["teacher"]
        squad_text = MISSING
        if s_squad and t_squad:
            squad_text = (
                f"{_retention(s_squad[0], t_squad[0])}/{_retention(s_squad[1], t_squad[1])}"
            )
        lines.append(_row(["student retention (%)", _retention(s_imdb, t_imdb), squad_text]))
    return "\n".join(lines)


def details(results: dict) -> str:
    """Every metric, the chosen grid point and the spread over seeds."""
    header = [
        "model",
        "task",
        "metrics (median over seeds)",
        "lr",
        "epochs",
        "seeds",
        "score min–max",
    ]
    lines = [_row(header), _row(["---"] * len(header))]
    for role, entry in results["models"].items():
        for name, s in entry["tasks"].items():
            shown = ", ".join(f"{k} {v:.2f}" for k, v in s["metrics"].items())
            lines.append(
                _row(
                    [
                        _label(role, entry),
                        TASKS[name].display,
                        shown,
                        f"{s['learning_rate']:g}",
                        f"{s['epochs']:g}",
                        str(s["seeds"]),
                        f"{s['score_min']:.2f}–{s['score_max']:.2f}",
                    ]
                )
            )
    return "\n".join(lines)


def render(results: dict, include_paper: bool = True) -> str:
    ran = {t for entry in results["models"].values() for t in entry["tasks"]}
    parts = ["# Downstream evaluation", ""]
    if ran & set(GLUE_TASKS):
        parts += ["## Table 1: GLUE dev", "", table1(results, include_paper), ""]
    if ran & {"imdb", "squad"}:
        parts += [
            "## Table 2: IMDb test accuracy, SQuAD v1.1 dev",
            "",
            table2(results, include_paper),
            "",
        ]
    parts += ["## All metrics", "", details(results), ""]
    return "\n".join(parts)
