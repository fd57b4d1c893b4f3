"""`illume report` on a handmade lake: integer rounds, per-tag changes, the gate, annotated samples.

A headless browser (chromium, when installed: `apt-get install -y chromium`) opens the page and
checks that every image loads.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from storage.lake import Lake
from storage.schemas import sample_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TAGS = ("counting", "colors")
PROMPTS = {  # prompt_id: (tag, prompt, split)
    "p-count": ("counting", "a photo of two red circles", "eval"),
    "p-color": ("colors", "a photo of a blue square", "eval"),
    "h-count": ("counting", "a photo of three green triangles", "heldout"),
    "h-color": ("colors", "a photo of a yellow circle", "heldout"),
}


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(im).ellipse((16, 16, 48, 48), fill=color)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _samples(rnd: int, ck: str, part: str, prompt_ids: list[str], k: int) -> list[dict]:
    return [
        dict(
            round=rnd, checkpoint_id=ck, prompt_id=p, sample_index=i, sample_key=sample_key(rnd, ck, p, i),
            seed=i, png=_png((200, 30 * i, 30)), image_tokens=[1, 2],
        )
        for p in prompt_ids
        for i in range(k)
    ]  # fmt: skip


def _judgments(samples: list[dict], ok: bool) -> list[dict]:
    return [
        dict(
            round=s["round"], checkpoint_id=s["checkpoint_id"], prompt_id=s["prompt_id"],
            sample_index=s["sample_index"], sample_key=s["sample_key"], tag=PROMPTS[s["prompt_id"]][0],
            correct=ok and s["sample_index"] == 0, reason="found 1 circle, expected 2",
            details=json.dumps({"dimensions": {}}), object_ok=True, count_ok=s["sample_index"] == 0,
            color_ok=True, spatial_ok=None,
        )
        for s in samples
    ]  # fmt: skip


def _assessments(samples: list[dict], part_suffix: str = "self") -> list[dict]:
    return [
        dict(
            round=s["round"], checkpoint_id=s["checkpoint_id"], prompt_id=s["prompt_id"],
            sample_index=s["sample_index"], sample_key=s["sample_key"], assessor="self",
            object_verdict="yes", object_reason="", count_verdict="yes", count_reason="",
            color_verdict="yes", color_reason="", spatial_verdict=None, spatial_reason="",
            raw_text="...", parse_status="ok",
        )
        for s in samples
    ]  # fmt: skip


def _evaluations(rnd: int, ck: str, scores: dict[tuple[str, str], float]) -> list[dict]:
    return [
        dict(round=rnd, checkpoint_id=ck, benchmark="shapeseval", split=sp, tag=t, metric="accuracy", value=v, n=8)
        for (sp, t), v in scores.items()
    ]  # fmt: skip


def _balanced(rnd: int, ck: str, text: float, likelihood: float) -> list[dict]:
    return [
        dict(round=rnd, checkpoint_id=ck, benchmark=b, split="eval", tag="overall", metric="balanced_accuracy",
             value=v, n=8)
        for b, v in (("self_assessment", text), ("self_assessment_likelihood", likelihood))
    ]  # fmt: skip


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("report") / "lake")
    w = lake.write_partition
    for split in ("eval", "heldout"):
        rows = [
            dict(round=0, prompt_id=p, tag=t, prompt=text, metadata="{}", split=sp)
            for p, (t, text, sp) in PROMPTS.items()
            if sp == split
        ]
        w("prompts", 0, rows, producer="prepare-data", part=f"shapeseval-{split}")
    w(
        "prompts", 1,
        [dict(round=1, prompt_id=p, tag=t, prompt=text, metadata="{}", split="train")
         for p, (t, text, sp) in PROMPTS.items() if sp == "eval"],
        producer="select-prompts", part="self",
    )  # fmt: skip
    for rnd, ck in ((0, "c0"), (1, "c1")):
        for split in ("eval", "heldout"):
            ids = [p for p, v in PROMPTS.items() if v[2] == split]
            part = f"eval-{split}-{ck}"
            samples = _samples(rnd, ck, part, ids, 1)
            w("samples", rnd, samples, producer="evaluate", part=part)
            w("judgments", rnd, _judgments(samples, True), producer="evaluate", part=part)
            if split == "eval":
                w("assessments", rnd, _assessments(samples), producer="evaluate", part=f"{part}-self")
    own = _samples(1, "c0", "self", ["p-count", "p-color"], 2)
    w("samples", 1, own, producer="sample", part="self")
    w("assessments", 1, _assessments(own), producer="assess", part="self-self")
    w("judgments", 1, _judgments(own, True), producer="judge", part="self")
    base = {
        ("eval", "counting"): 0.25,
        ("eval", "colors"): 0.5,
        ("heldout", "counting"): 0.0,
        ("heldout", "colors"): 0.5,
    }
    cand = {
        ("eval", "counting"): 0.5,
        ("eval", "colors"): 0.375,
        ("heldout", "counting"): 0.0,
        ("heldout", "colors"): 0.25,
    }
    w(
        "evaluations",
        0,
        _evaluations(0, "c0", base) + _balanced(0, "c0", 0.5, 0.8),
        producer="evaluate",
        part="c0",
    )
    w(
        "evaluations",
        1,
        _evaluations(1, "c1", cand) + _balanced(1, "c1", 0.5, 0.85),
        producer="evaluate",
        part="c1",
    )
    trials = [
        dict(round=0, checkpoint_id="c0", setting=st, params="{}", tag=t, accuracy=acc, n=4, chosen=st == "2:1:0")
        for st, scores in (("2:1:0:0.7", (0.0, 0.25)), ("2:1:0", (0.5, 0.75)))
        for t, acc in zip(("counting", "colors", "overall"), (*scores, sum(scores) / 2), strict=True)
    ]  # fmt: skip
    w("sampling_trials", 0, trials, producer="calibrate-sampling")
    w("rounds", 0, [dict(round=0, base_checkpoint="c0", candidate_checkpoint="c0", status="promoted",
                         reason="base training run", started_at=T0, ended_at=T0, params="{}")],
      producer="round", part="round")  # fmt: skip
    w("rounds", 1, [dict(round=1, base_checkpoint="c0", candidate_checkpoint="c1", status="rejected",
                         reason="ShapesEval overall fell 0.312 -> 0.281, more than the margin 0.02",
                         started_at=T0, ended_at=T0, params=json.dumps({"assessor": "self", "n_prompts": 2}))],
      producer="round", part="round")  # fmt: skip
    return lake


@pytest.fixture(scope="module")
def page(lake):
    from flows.report import build_report

    index = build_report(lake.root)
    return index, index.read_text(encoding="utf-8")


def test_both_self_assessments_are_charted_per_round(page):
    index, text = page
    assert "<img src='balanced.png'" in text and (index.parent / "balanced.png").stat().st_size > 1000
    from flows.report import _figure

    fig = _figure(
        [dict(round=r, assessor=a, value=v) for r, a, v in ((0, "likelihood", 0.8), (0, "text answer", 0.5))],
        "round", "assessor", "value", "t",
    )  # fmt: skip
    assert sorted(line.get_label() for line in fig.axes[0].get_lines()) == ["likelihood", "text answer"]


def test_the_sampling_setting_and_its_candidates_are_shown(page):
    _, html = page
    section = html[html.index("<h2 id='sampling'>") :]
    section = section[: section.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", section)[1:]
    assert [re.search(r"<code>(.*?)</code>", r).group(1) for r in rows] == [
        "2:1:0",
        "2:1:0:0.7",
    ]  # best first
    assert "chosen" in rows[0] and "chosen" not in rows[1]  # the lake's setting is the best overall
    assert "0.625" in rows[0] and "0.125" in rows[1]  # overall, as the tuning images scored it


def test_round_axis_is_integer():
    from flows.report import _figure

    rows = [dict(round=r, tag="overall", value=v) for r, v in ((0, 0.1), (1, 0.2), (2, 0.4))]
    fig = _figure(rows, "round", "tag", "value", "t")
    ticks = list(fig.axes[0].get_xticks())
    assert ticks == [0, 1, 2]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1", "2"]


def test_each_round_has_its_scores_change_and_the_gates_reason(page):
    _, text = page
    assert "id='round-0'" in text and "id='round-1'" in text
    assert text.index("id='round-1'") < text.index("id='round-0'")  # the latest round first
    r1 = text[text.index("id='round-1'") : text.index("id='round-0'")]
    assert "rejected" in r1 and "more than the margin 0.02" in r1
    # counting on seen compositions: 0.250 -> 0.500, +0.250; colors 0.500 -> 0.375, -0.125
    assert re.search(
        r"counting</td><td class='num'>0\.250</td><td class='num'>0\.500</td><td class='num up'>\+0\.250", r1
    )
    assert re.search(
        r"colors</td><td class='num'>0\.500</td><td class='num'>0\.375</td><td class='num down'>-0\.125", r1
    )
    assert "overall" in r1 and "previous" in r1 and "this round" in r1
    r0 = text[text.index("id='round-0'") :]
    assert "base training run" in r0 and "previous" not in r0  # nothing to compare the base with


def test_samples_carry_prompt_verdicts_and_judge_with_mismatches_marked(page):
    _, text = page
    r1 = text[text.index("id='round-1'") : text.index("id='round-0'")]
    own = r1[r1.index("The round's samples") : r1.index("Evaluation samples")]
    assert own.count("<div class='card'") == 4  # 2 prompts x 2 samples, all within 3 per tag
    assert "a photo of two red circles" in own and "a photo of a blue square" in own
    # sample 1 of each prompt: the model says count "yes", the judge no -> marked
    assert own.count("<tr class=miss><td>count</td><td>yes</td><td>no</td></tr>") == 2
    assert "<tr><td>count</td><td>yes</td><td>yes</td></tr>" in own
    held = r1[r1.index("Evaluation samples") :]
    assert "seen compositions" in held and "held-out compositions" in held
    assert "a photo of three green triangles" in held  # a held-out prompt, beside the seen ones
    assert held.count("<div class='card'") == 4  # 1 per tag and split
    assert text.count("src='data:image/png;base64,") == 4 + 4 + 4  # round 1 own + eval, round 0 eval


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def test_page_renders_in_a_headless_browser_with_every_image_loaded(page, tmp_path):
    exe = _browser()
    if exe is None:
        pytest.skip("no chromium on this machine (apt-get install -y chromium)")
    index, text = page
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*flags, "--dump-dom", index.resolve().as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    n = len(re.findall(r"<img\b", text))
    assert f'data-images="{n} images, 0 broken"' in dom, dom[-500:]
    assert dom.count('data-loaded="yes"') == n and 'data-loaded="no"' not in dom
    for r in (0, 1):
        assert f'id="round-{r}"' in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,1600", index.resolve().as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000  # a page, not a blank


def test_round_summary_artifact_shows_the_samples_and_the_scores_against_the_previous_round(lake):
    """The markdown the round publishes to Prefect: images inline (data: URIs), not a file path."""
    import base64

    from PIL import Image

    from flows.report import round_summary_markdown, scores_against_previous

    before, after = lake.read("evaluations", 0).to_pylist(), lake.read("evaluations", 1).to_pylist()
    table = scores_against_previous(before, after)
    got = {(t["split"], t["tag"]): (t["previous"], t["this round"], t["change"]) for t in table}
    assert got[("eval", "counting")] == (0.25, 0.5, 0.25) and got[("eval", "colors")] == (0.5, 0.375, -0.125)
    samples = lake.read("samples", 1, "self").to_pylist()
    decision = {
        "status": "rejected",
        "reason": "fell by more than the margin",
        "parse_rate": 1.0,
        "round_parse_rate": 0.75,
    }
    md = round_summary_markdown(
        1,
        decision,
        table,
        samples,
        {p: v[1] for p, v in PROMPTS.items()},
        lake.read("assessments", 1, "self-self").to_pylist(),
        lake.read("judgments", 1, "self").to_pylist(),
    )
    assert "# Round 1: rejected" in md and "fell by more than the margin" in md
    assert "| eval | counting | 0.250 | 0.500 | +0.250 |" in md
    images = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert len(images) == len(samples) == 4
    im = Image.open(io.BytesIO(base64.b64decode(images[0])))
    assert im.size == (128, 128)  # the 64-px sample, enlarged for the UI
    assert md.count("a photo of two red circles") == 2
    assert md.count("yes / no **≠**") == 2  # count: the model said yes where the judge says no
    assert "reports/" not in md and "`" not in md  # no file path in backticks
