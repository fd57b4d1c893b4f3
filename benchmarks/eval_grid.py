"""A page of a checkpoint's ShapesEval samples: one row per tag, each image framed by the judge's verdict.

Reads the lake's evaluation samples and judgments (the parts `eval-<split>-<checkpoint id>`) and
writes a PNG: for each tag, the first image of the first `--per-tag` prompts, scaled up, with a
green frame where the judge passed it and a red one where it did not, the prompt under it.

    .venv/bin/python benchmarks/eval_grid.py --lake LAKE --out docs/BASE_MODEL_run5_samples.png
    .venv/bin/python benchmarks/eval_grid.py --lake LAKE --checkpoint <id> --split heldout --per-tag 8
"""

from __future__ import annotations

import argparse
import io
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--checkpoint", default=None, help="checkpoint id (default: the lake's round-0 base)")
    ap.add_argument("--split", default="eval", choices=("eval", "heldout"))
    ap.add_argument("--per-tag", type=int, default=12)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from storage.registry import get_lake

    lake = get_lake(args.lake)
    ck = args.checkpoint
    if ck is None:
        base = [r for r in lake.read("rounds").to_pylist() if r["round"] == 0]
        if not base:
            raise SystemExit(f"{args.lake} has no base model (round 0); pass --checkpoint")
        ck = base[0]["candidate_checkpoint"] or base[0]["base_checkpoint"]
    part = f"eval-{args.split}-{ck}"
    found = [p for p in lake.partitions("judgments") if p.part == part]
    if not found:
        raise SystemExit(f"no judgments in part {part} of {args.lake}: evaluate that checkpoint first")
    rnd = found[0].round
    judged = lake.read("judgments", rnd, part).to_pylist()
    pngs = {s["sample_key"]: s["png"] for s in lake.read("samples", rnd, part).to_pylist()}
    prompts = {p["prompt_id"]: p["prompt"] for p in lake.read("prompts", 0).to_pylist()}
    first = sorted((j for j in judged if j["sample_index"] == 0), key=lambda j: j["prompt_id"])
    rows = [[j for j in first if j["tag"] == t][: args.per_tag] for t in TAGS]
    rows = [r for r in rows if r]
    side, pad, text_h = 64 * args.scale, 6, 40
    cell_w, cell_h = side + 2 * pad, side + 2 * pad + text_h
    cols = max(len(r) for r in rows)
    page = Image.new("RGB", (150 + cols * cell_w, len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(page)
    for y, row in enumerate(rows):
        draw.text((6, y * cell_h + side // 2), row[0]["tag"], fill="black")
        for x, j in enumerate(row):
            im = (
                Image.open(io.BytesIO(pngs[j["sample_key"]]))
                .convert("RGB")
                .resize((side, side), Image.NEAREST)
            )
            x0, y0 = 150 + x * cell_w, y * cell_h
            draw.rectangle(
                [x0, y0, x0 + side + 2 * pad - 1, y0 + side + 2 * pad - 1],
                fill="green" if j["correct"] else "red",
            )
            page.paste(im, (x0 + pad, y0 + pad))
            words = prompts.get(j["prompt_id"], "").removeprefix("a photo of ")
            draw.multiline_text(
                (x0, y0 + side + 2 * pad + 1), "\n".join(textwrap.wrap(words, 22)[:3]), fill="black"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    page.save(args.out)
    passed = sum(j["correct"] for r in rows for j in r)
    print(f"wrote {args.out}: checkpoint {ck}, {args.split}, {sum(map(len, rows))} images, {passed} passed")


if __name__ == "__main__":
    main()
