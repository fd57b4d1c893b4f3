"""`illume report`: one HTML page per lake: charts per round and tag, the gate's decisions, samples.

Reads the lake through the DuckDB catalog (the same views analysts query), so the page shows
exactly what `illume sql` would; writes `<lake>/reports/index.html` beside its chart PNGs. The
sample images are inlined (data: URIs), so the page needs nothing but its folder. Per round:

- ShapesEval per tag of the round's candidate against the model it started from (the previous
  round's current model: what the gate compared), on seen and held-out compositions;
- the gate's decision and its reason, and the self-assessment agreement per dimension;
- a grid of the round's samples, each with its prompt, the assessor's four verdicts and the
  judge's truths (a disagreement is marked), then evaluation samples of seen and held-out
  compositions side by side.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path

from storage import blobs
from storage.catalog import query
from storage.lake import Lake
from storage.registry import read_sampling
from storage.schemas import DIMENSIONS

SELF_PER_TAG = 3  # round samples shown per tag
EVAL_PER_TAG = 1  # evaluation samples shown per tag and split
SPLITS = {"eval": "seen compositions", "heldout": "held-out compositions"}

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:0 12px;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2em} td,th{padding:2px 8px;text-align:left}
table.scores td.num,table.scores th.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#1a7f37}.down{color:#cf222e}.promoted{color:#1a7f37}.rejected{color:#cf222e}
.decision{background:#f6f8fa;border-left:4px solid #888;padding:6px 10px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}
.card{border:1px solid #ddd;border-radius:4px;padding:6px;font-size:12px}
.card img{width:128px;height:128px;image-rendering:pixelated;display:block;margin:auto;background:#eee}
.card .prompt{font-weight:600;margin:4px 0;min-height:2.4em}
.card table{width:100%;border-collapse:collapse}.card td{padding:0 4px}
.miss{background:#ffebe9}.miss td:last-child::after{content:" \\2260";color:#cf222e;font-weight:700}
.splits{display:grid;grid-template-columns:1fr 1fr;gap:16px}
img[data-loaded=no]{outline:3px solid #cf222e}
"""
# marks each image once the page has loaded (a broken one gets a red outline); a headless browser
# reads the marks from the DOM (tests/test_report.py)
_SCRIPT = """<script>
window.addEventListener('load', () => {
  let bad = 0;
  for (const im of document.images) {
    const ok = im.complete && im.naturalWidth > 0;
    im.dataset.loaded = ok ? 'yes' : 'no';
    bad += ok ? 0 : 1;
  }
  document.body.dataset.images = document.images.length + ' images, ' + bad + ' broken';
});
</script>"""


def _chart(rows: list[dict], x: str, series: str, y: str, title: str, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = _figure(rows, x, series, y, title)
    fig.savefig(out)
    plt.close(fig)
    return out


def _figure(rows: list[dict], x: str, series: str, y: str, title: str):
    """A line per series over integer rounds (a matplotlib Figure)."""
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
    xs = sorted({int(r[x]) for r in rows})
    ax.set_xticks(xs)  # rounds are integers: one tick per round, never 0.2 steps
    ax.set_xlim(xs[0] - 0.5, xs[-1] + 0.5)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _e(v: object) -> str:
    return html.escape("" if v is None else str(v))


def _fmt(v: float | None) -> str:
    return "&ndash;" if v is None else f"{v:.3f}"


def _num(v: float | None, extra: str = "") -> str:
    """A number cell: the figure to three places (a dash when there is none), then `extra`."""
    return f"<td class='num'>{_fmt(v)}{extra}</td>"


def _row(cells: list[str]) -> str:
    return "<tr>" + "".join(cells) + "</tr>"


def _delta(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return _num(None)
    d = after - before
    cls = "up" if d > 1e-9 else "down" if d < -1e-9 else ""
    return f"<td class='num {cls}'>{d:+.3f}</td>"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _yes_no(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _card(s: dict) -> str:
    """One sample: the image, its prompt, the assessor's and the judge's verdicts per dimension."""
    rows = []
    for d in DIMENSIONS:
        mine, truth = s.get(f"{d}_verdict"), _yes_no(s.get(f"{d}_ok"))
        miss = mine is not None and truth is not None and mine != truth
        rows.append(
            f"<tr{' class=miss' if miss else ''}><td>{d}</td><td>{_e(mine) or '&ndash;'}</td>"
            f"<td>{_e(truth) or '&ndash;'}</td></tr>"
        )
    verdict = {True: "correct", False: "wrong", None: "not judged"}[s.get("correct")]
    assessor = s.get("assessor") or "not assessed"
    return (
        f"<div class='card' title='{_e(s['sample_key'])}'>"
        f"<img src='{_data_uri(s['png'])}' alt='{_e(s['prompt'])}'>"
        f"<div class='prompt'>{_e(s['prompt'])}</div>"
        f"<div>{_e(s['tag'])}; judge: <b>{verdict}</b></div>"
        f"<table><tr><th></th><th>{_e(assessor)}</th><th>judge</th></tr>{''.join(rows)}</table>"
        f"<div title='{_e(s.get('judge_reason'))}' style='color:#666;overflow:hidden;"
        f"text-overflow:ellipsis;white-space:nowrap'>{_e(s.get('judge_reason'))}</div>"
        "</div>"
    )


def _samples(lake: Lake, r: int, checkpoint: str | None) -> list[dict]:
    """The samples shown for round r: the round's own (part self) and the checkpoint's eval samples."""
    truths = ", ".join(
        f"coalesce(j.{d}_ok, TRY_CAST(json_extract_string(j.details, '$.dimensions.{d}') AS BOOLEAN)) AS {d}_ok"
        for d in DIMENSIONS
    )
    verdicts = ", ".join(f"a.{d}_verdict" for d in DIMENSIONS)
    ck = "NULL" if checkpoint is None else "'" + checkpoint.replace("'", "''") + "'"
    sql = f"""
    WITH p AS (SELECT prompt_id, any_value(prompt) AS prompt, any_value(tag) AS tag FROM prompts GROUP BY prompt_id),
    s AS (
        SELECT s.round, s.checkpoint_id, s.prompt_id, s.sample_index, s.sample_key, s.part, s.png, p.prompt, p.tag,
               CASE WHEN s.part = 'self' THEN 'self'
                    WHEN s.part = 'eval-eval-' || {ck} THEN 'eval'
                    WHEN s.part = 'eval-heldout-' || {ck} THEN 'heldout' END AS kind
        FROM samples s JOIN p USING (prompt_id)
        WHERE s.round = {int(r)}
    ),
    picked AS (
        SELECT * FROM s WHERE kind IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY kind, tag ORDER BY prompt_id, sample_index)
                <= CASE WHEN kind = 'self' THEN {SELF_PER_TAG} ELSE {EVAL_PER_TAG} END
    )
    SELECT s.kind, s.sample_key, s.png, s.prompt, s.tag, a.assessor, {verdicts}, a.parse_status,
           j.correct, j.reason AS judge_reason, {truths}
    FROM picked s
    LEFT JOIN assessments a ON a.round = s.round AND a.checkpoint_id = s.checkpoint_id
         AND a.prompt_id = s.prompt_id AND a.sample_index = s.sample_index
         AND a.part IN (s.part || '-self', s.part || '-likelihood', s.part || '-judge')  -- assess writes part <samples part>-<assessor>
    LEFT JOIN judgments j ON j.round = s.round AND j.checkpoint_id = s.checkpoint_id
         AND j.prompt_id = s.prompt_id AND j.sample_index = s.sample_index
         AND j.part = s.part  -- judge writes the samples' part
    QUALIFY row_number() OVER (PARTITION BY s.kind, s.sample_key ORDER BY a.assessor = 'self' DESC, a.part) = 1
    ORDER BY s.kind, s.tag, s.prompt_id, s.sample_index
    """
    return query(lake, sql).to_pylist()


ARM_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def _ci(row: dict | None, sign: str = "") -> str:
    """A figure's 95% interval as ' [lo, hi]' (nothing when it has none)."""
    if row is None or row["ci_low"] is None:
        return ""
    return f" <small>[{row['ci_low']:{sign}.3f}, {row['ci_high']:{sign}.3f}]</small>"


def _arms_section(lake: Lake) -> list[str]:
    """The self-enhancement experiment's arms (benchmarks/self_enhancement.py), one table a seed."""
    # from the manifest, not the catalog: a catalog built before the table existed has no view of it
    if not lake.partitions("experiment_arms"):
        return []
    rows = query(lake, "SELECT * FROM experiment_arms ORDER BY seed, arm, metric").to_pylist()
    if not rows:
        return []
    fig: dict[int, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        fig[r["seed"]][r["arm"]][r["metric"]] = r
    out = [
        "<h2 id='arms'>Self-enhancement experiment: arms against their control</h2>",
        "<p>Every arm starts from the same base model (round 0). Overall is ShapesEval's mean over "
        "tags; intervals are 95% bootstrap intervals over prompts, paired across arms.</p>",
    ]
    for seed, arms in sorted(fig.items()):
        lr = next(iter(next(iter(arms.values())).values()))["finetune_lr_scale"]
        heads = ["arm", "overall", "minus control", "held-out", *ARM_TAGS, "VQA", "minutes"]
        out.append(f"<h3>Seed {seed} (fine-tuning lr x{lr:g})</h3><table class='scores'><tr>")
        out.append("".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr>")
        order = sorted(arms, key=lambda a: (a != "baseline", a != "control", a))
        for arm in order:
            m = arms[arm]

            def v(key: str, m: dict = m) -> float | None:
                return m[key]["value"] if key in m else None

            diff = m.get("overall_minus_control")
            cells = [
                f"<td>{_e(arm)}</td>",
                _num(v("overall"), _ci(m.get("overall"))),
                (
                    f"<td class='num {'up' if diff['value'] > 0 else 'down'}'>{diff['value']:+.3f}{_ci(diff, '+')}</td>"
                    if diff
                    else _num(None)
                ),
                _num(v("heldout_overall")),
                *(_num(v(t)) for t in ARM_TAGS),
                _num(v("vqa_overall")),
                _num(next(iter(m.values()))["minutes"]),
            ]
            out.append(_row(cells))
        out.append("</table>")
    return out


def _same_json(a: str, b: str | None) -> bool:
    return b is not None and json.loads(a) == json.loads(b)


def _sampling_section(lake: Lake) -> list[str]:
    """The base model's sampling setting and every candidate's scores on the tuning prompts."""
    if not lake.partitions("sampling_trials"):  # a lake trained before the pipeline chose one
        return []
    rows = query(lake, "SELECT * FROM sampling_trials").to_pylist()
    if not rows:
        return []
    # the choice the lake draws with now (`illume calibrate` may have chosen several times): the
    # calibration whose chosen setting is the stored one, the latest round's among equals
    stored = read_sampling(str(lake.root))
    groups = {(r["round"], r["checkpoint_id"]) for r in rows}
    now = {(r["round"], r["checkpoint_id"]) for r in rows if r["chosen"] and _same_json(r["params"], stored)}
    last = max(now or groups)
    by_setting: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if (r["round"], r["checkpoint_id"]) == last:
            by_setting[r["setting"]][r["tag"]] = r
    tags = [t for t in ARM_TAGS if any(t in v for v in by_setting.values())]
    out = [
        "<h2 id='sampling'>Sampling setting</h2>",
        "<p>After base training the model drew the tuning prompts (a prompt set of their own, not "
        "ShapesEval's) under each candidate setting, <code>cfg:temperature:top_k:top_p</code> "
        "(<code>m</code>: the nucleus is cut over shapes, then colours); the judge scored them, and "
        f"the best overall became the setting of every drawing in this lake (chosen with checkpoint "
        f"<code>{_e(last[1])}</code>, round {last[0]}).</p>",
        "<table class='scores'><tr>"
        + "".join(f"<th>{_e(h)}</th>" for h in ["setting", "overall", *tags, "images", "chosen"])
        + "</tr>",
    ]
    # the best first (the chosen one first among equals)
    order = sorted(
        by_setting,
        key=lambda k: (-by_setting[k]["overall"]["accuracy"], not by_setting[k]["overall"]["chosen"]),
    )
    for setting in order:
        by_tag = by_setting[setting]
        ov = by_tag["overall"]
        cells = [
            f"<td><code>{_e(setting)}</code></td>",
            _num(ov["accuracy"]),
            *(_num(by_tag[t]["accuracy"] if t in by_tag else None) for t in tags),
            f"<td class='num'>{ov['n']}</td>",
            f"<td>{'chosen' if ov['chosen'] else ''}</td>",
        ]
        out.append(_row(cells))
    out.append("</table>")
    return out


def _round_section(lake: Lake, rnd: dict, scores: dict, agreement: dict) -> list[str]:
    r = rnd["round"]
    base, cand = rnd["base_checkpoint"], rnd["candidate_checkpoint"]
    status = rnd["status"]
    params = json.loads(rnd["params"] or "{}") if rnd.get("params") else {}
    out = [f"<h2 id='round-{r}'>Round {r}</h2>"]
    title = "base training run" if r == 0 else f"from {_e(base)} to candidate {_e(cand)}"
    out.append(
        f"<p class='decision'><b class='{_e(status)}'>{_e(status)}</b> ({title}): {_e(rnd['reason'])}</p>"
    )
    if r and params:
        shown = ", ".join(
            f"{k} {_e(', '.join(map(str, params[k])) if isinstance(params[k], list) else params[k])}"
            for k in (
                "assessor",
                "n_prompts",
                "images_per_prompt",
                "strategies",
                "finetune_steps",
                "finetune_lr_scale",
                "margin",
                "min_parse_rate",
            )
            if params.get(k) is not None
        )
        out.append(f"<p>Parameters: {shown}</p>")
    checked = cand or base
    tags = sorted({t for (c, _, t) in scores if c == checked}, key=lambda t: (t == "overall", t))
    if tags:
        has_prev = r > 0 and base != cand
        span = 3 if has_prev else 1
        sub = "<th class='num'>previous</th><th class='num'>this round</th><th class='num'>change</th>"
        out.append(
            "<table class='scores'><tr><th rowspan=2>tag</th>"
            + "".join(
                f"<th colspan={span} style='text-align:center'>{label}</th>" for label in SPLITS.values()
            )
            + "</tr><tr>"
            + (sub * len(SPLITS) if has_prev else "<th class='num'>score</th>" * len(SPLITS))
            + "</tr>"
        )
        for t in tags:
            cells = []
            for sp in SPLITS:
                after = scores.get((checked, sp, t))
                if has_prev:
                    before = scores.get((base, sp, t))
                    cells.append(_num(before) + _num(after) + _delta(before, after))
                else:
                    cells.append(_num(after))
            bold = " style='font-weight:700'" if t == "overall" else ""
            out.append(f"<tr{bold}><td>{_e(t)}</td>{''.join(cells)}</tr>")
        out.append("</table>")
        note = (
            "ShapesEval accuracy of the candidate against the model the round started from (what the gate compared)."
            if has_prev
            else "ShapesEval accuracy of the base model."
        )
        out.append(f"<p style='color:#666'>{note}</p>")
    if agreement.get(r):
        cells = "".join(
            f"<td class='num'>{a['accuracy']:.3f} (n={a['n']}, fp={a['fp']}, fn={a['fn']})</td>"
            for a in agreement[r]
        )
        heads = "".join(f"<th class='num'>{_e(a['dimension'])}</th>" for a in agreement[r])
        out.append(
            "<p>Self-assessment agreement with the judge, per dimension (this round's samples and its evaluation samples):</p>"
            f"<table class='scores'><tr>{heads}</tr><tr>{cells}</tr></table>"
        )
    samples = _samples(lake, r, checked)
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_kind[s["kind"]].append(s)
    if by_kind["self"]:
        out.append(
            f"<h3>The round's samples ({SELF_PER_TAG} per tag at most): prompt, verdicts, judge</h3>"
            "<p style='color:#666'>Each image with its prompt, the assessor's verdict per dimension and the"
            " judge's truth; a row where they disagree is marked &ne;.</p>"
        )
        out.append("<div class='grid'>" + "".join(_card(s) for s in by_kind["self"]) + "</div>")
    if by_kind["eval"] or by_kind["heldout"]:
        out.append(f"<h3>Evaluation samples of {_e(checked)}: seen and held-out compositions</h3>")
        out.append("<div class='splits'>")
        for kind, label in SPLITS.items():
            cards = "".join(_card(s) for s in by_kind[kind]) or "<p>none</p>"
            out.append(f"<div><h4>{label}</h4><div class='grid'>{cards}</div></div>")
        out.append("</div>")
    return out


def build_report(lake_root: str) -> Path:
    """Write the report into <lake>/reports and return the path of its index.html on this machine
    (for a bucket lake, a local copy of what was uploaded to its `reports/`)."""
    lake = Lake(lake_root)
    out = blobs.local_dir(lake_root, "reports")
    out.mkdir(parents=True, exist_ok=True)
    rounds = query(
        lake,
        "SELECT round, status, reason, base_checkpoint, candidate_checkpoint, params FROM rounds ORDER BY round",
    ).to_pylist()
    all_scores = query(
        lake, "SELECT round, checkpoint_id, split, tag, value FROM round_scores ORDER BY round, tag"
    ).to_pylist()
    scores = {(s["checkpoint_id"], s["split"], s["tag"]): s["value"] for s in all_scores}
    # the chart: per round, the scores of the checkpoint that round produced (its candidate)
    produced = {r["round"]: r["candidate_checkpoint"] or r["base_checkpoint"] for r in rounds}
    chart = [
        s
        for s in all_scores
        if s["split"] == "eval" and produced.get(s["round"], s["checkpoint_id"]) == s["checkpoint_id"]
    ]
    agree = query(
        lake,
        "SELECT round, tag AS dimension, value FROM evaluations "
        "WHERE benchmark = 'self_assessment' AND metric = 'agreement' ORDER BY round",
    ).to_pylist()
    # the model's two ways of judging its own evaluation images (balanced accuracy against the judge)
    balanced = query(
        lake,
        "SELECT round, CASE benchmark WHEN 'self_assessment' THEN 'text answer' ELSE 'likelihood' END "
        "AS assessor, max(value) AS value FROM evaluations WHERE benchmark IN ('self_assessment', "
        "'self_assessment_likelihood') AND metric = 'balanced_accuracy' AND split = 'eval' "
        "AND tag = 'overall' GROUP BY ALL ORDER BY round",
    ).to_pylist()
    agreement: dict[int, list[dict]] = defaultdict(list)
    for a in query(lake, "SELECT * FROM assessment_agreement ORDER BY round, dimension").to_pylist():
        agreement[a["round"]].append(a)
    parts = [
        "<!doctype html><meta charset='utf-8'><title>illume report</title>",
        f"<style>{_STYLE}</style>",
        f"<h1>illume: {_e(blobs.uri(lake_root))}</h1>",
    ]
    if rounds:
        parts.append(
            "<p>Rounds: "
            + " &middot; ".join(
                f"<a href='#round-{r['round']}'>{r['round']} ({_e(r['status'])})</a>" for r in rounds
            )
            + "</p>"
        )
    if chart:
        _chart(
            chart, "round", "tag", "value", "ShapesEval accuracy per round and tag (seen)", out / "scores.png"
        )
        parts.append("<h2>ShapesEval per round</h2><img src='scores.png' alt='ShapesEval per round and tag'>")
    if agree:
        _chart(
            agree,
            "round",
            "dimension",
            "value",
            "Self-assessment agreement with the judge",
            out / "agreement.png",
        )
        parts.append("<h2>Self-assessment agreement</h2><img src='agreement.png' alt='agreement per round'>")
    if balanced:
        _chart(
            balanced,
            "round",
            "assessor",
            "value",
            "Self-assessment balanced accuracy (0.5 = constant answer)",
            out / "balanced.png",
        )
        parts.append(
            "<h2>Self-assessment: the text answer and the likelihood</h2>"
            "<img src='balanced.png' alt='self-assessment balanced accuracy per round and assessor'>"
        )
    parts += _sampling_section(lake)
    parts += _arms_section(lake)
    for rnd in sorted(rounds, key=lambda x: -x["round"]):  # the latest round first
        parts += _round_section(lake, rnd, scores, agreement)
    parts.append(_SCRIPT)
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    blobs.upload_folder(lake_root, out, "reports")
    return index


# ------------------------------------------------------------------ the round's Prefect summary


def _thumb_uri(png: bytes, scale: int = 2) -> str:
    """A sample as a data: URI, enlarged without smoothing so a 64-px image reads in the UI."""
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return _data_uri(buf.getvalue())


def _md(v: object) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def scores_against_previous(before: list[dict], after: list[dict]) -> list[dict]:
    """ShapesEval per split and tag: the round's base (previous), the candidate, the change."""

    def by(rows: list[dict]) -> dict:
        return {(x["split"], x["tag"]): x["value"] for x in rows if x["benchmark"] == "shapeseval"}

    b, a = by(before), by(after)
    return [
        {
            "split": k[0],
            "tag": k[1],
            "previous": None if k not in b else round(b[k], 3),
            "this round": round(v, 3),
            "change": None if k not in b else round(v - b[k], 3),
        }
        for k, v in sorted(a.items(), key=lambda kv: (kv[0][0], kv[0][1] == "overall", kv[0][1]))
    ]


def round_summary_markdown(
    r: int,
    decision: dict,
    scores: list[dict],
    samples: list[dict],
    prompts: dict[str, str],
    assessments: list[dict],
    judgments: list[dict],
    n: int = 12,
) -> str:
    """The round's summary for the Prefect UI: the decision and why, scores per tag against the
    previous round, and the first `n` samples themselves (inline data: images) with their prompt,
    the assessor's four verdicts and the judge's truths (a disagreement marked)."""
    md = [
        f"# Round {r}: {decision['status']}",
        "",
        f"**Why:** {decision['reason']}",
        "",
        f"Parse rate of the candidate's self-assessments: {decision['parse_rate']:.2f} "
        f"(the round's, by its base model: {decision['round_parse_rate']:.2f})",
        "",
        "## ShapesEval per tag against the previous round",
        "",
        "| split | tag | previous | this round | change |",
        "|---|---|---:|---:|---:|",
    ]
    for s in scores:
        prev = "–" if s["previous"] is None else f"{s['previous']:.3f}"
        change = "–" if s["change"] is None else f"{s['change']:+.3f}"
        tag = f"**{s['tag']}**" if s["tag"] == "overall" else s["tag"]
        md.append(f"| {s['split']} | {tag} | {prev} | {s['this round']:.3f} | {change} |")
    key = lambda x: (x["prompt_id"], x["sample_index"])  # noqa: E731
    verdicts = {key(a): a for a in assessments}
    truths = {key(j): j for j in judgments}
    shown = sorted(samples, key=key)[:n]
    if shown:
        md += [
            "",
            f"## Samples ({len(shown)} of {len(samples)})",
            "",
            "Each cell: the assessor's verdict / the judge's truth; ≠ marks a disagreement.",
            "",
            "| sample | prompt | " + " | ".join(DIMENSIONS) + " | judge |",
            "|---|---|" + "---|" * len(DIMENSIONS) + "---|",
        ]
        for s in shown:
            a, j = verdicts.get(key(s), {}), truths.get(key(s), {})
            cells = []
            for d in DIMENSIONS:
                mine, truth = a.get(f"{d}_verdict"), _yes_no(j.get(f"{d}_ok"))
                mark = " **≠**" if mine is not None and truth is not None and mine != truth else ""
                cells.append(f"{mine or '–'} / {truth or '–'}{mark}")
            verdict = {True: "correct", False: "wrong"}.get(j.get("correct"), "–")
            md.append(
                f"| ![{_md(s['sample_key'])}]({_thumb_uri(s['png'])}) | {_md(prompts.get(s['prompt_id'], ''))} | "
                + " | ".join(cells)
                + f" | {verdict}: {_md(j.get('reason', ''))} |"
            )
    return "\n".join(md)
