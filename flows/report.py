"""`illume report`: an HTML page with PNG charts of scores per round and tag, and sample grids.

Reads the lake through the DuckDB catalog (the same views analysts query), so the page shows
exactly what `illume sql` would; writes `<lake>/reports/index.html` beside its PNGs.
"""

from __future__ import annotations

import html
from pathlib import Path

from storage.catalog import query
from storage.lake import Lake


def _chart(rows: list[dict], x: str, series: str, y: str, title: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    for name in sorted({r[series] for r in rows}):
        pts = sorted((r[x], r[y]) for r in rows if r[series] == name)
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            label=name,
            linewidth=2.5 if name == "overall" else 1.2,
        )
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def build_report(lake_root: str) -> Path:
    """Write the report and return the path of index.html."""
    lake = Lake(lake_root)
    out = Path(lake_root) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    scores = query(
        lake, "SELECT round, tag, value FROM round_scores WHERE split = 'eval' ORDER BY round, tag"
    ).to_pylist()
    agree = query(
        lake,
        "SELECT round, tag AS dimension, value FROM evaluations "
        "WHERE benchmark = 'self_assessment' AND metric = 'agreement' ORDER BY round",
    ).to_pylist()
    rounds = query(
        lake, "SELECT round, status, reason, base_checkpoint, candidate_checkpoint FROM rounds ORDER BY round"
    ).to_pylist()
    parts = [
        "<!doctype html><meta charset='utf-8'><title>illume report</title>",
        "<style>body{font-family:sans-serif;max-width:900px;margin:auto}td,th{padding:2px 8px}</style>",
        f"<h1>illume: {html.escape(str(Path(lake_root).resolve()))}</h1>",
    ]
    if scores:
        _chart(scores, "round", "tag", "value", "ShapesEval accuracy per round and tag", out / "scores.png")
        parts.append("<h2>ShapesEval per round</h2><img src='scores.png'>")
    if agree:
        _chart(
            agree,
            "round",
            "dimension",
            "value",
            "Self-assessment agreement with the judge",
            out / "agreement.png",
        )
        parts.append("<h2>Self-assessment agreement</h2><img src='agreement.png'>")
    parts.append(
        "<h2>Rounds</h2><table><tr><th>round</th><th>status</th><th>reason</th><th>base</th><th>candidate</th></tr>"
    )
    for r in rounds:
        parts.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(r[k]))}</td>"
                for k in ("round", "status", "reason", "base_checkpoint", "candidate_checkpoint")
            )
            + "</tr>"
        )
    parts.append("</table>")
    grids = sorted(out.glob("round-*-samples.png"))
    if grids:
        parts.append("<h2>Samples</h2>")
        parts += [
            f"<p>{html.escape(g.stem)}</p><img src='{g.name}' style='image-rendering:pixelated;width:100%'>"
            for g in grids
        ]
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index
