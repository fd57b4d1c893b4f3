"""How a model's two-colour drawings fail: per prompted object, is its shape drawn in its own
colour, in the other object's colour (the pair swapped), in a colour the prompt does not name,
or not drawn at all? Read from a lake's judgments (the judge's detected objects) and prompts.

    .venv/bin/python benchmarks/binding_errors.py --lake LAKE [--round 0] [--tags color_attr position]

A model that binds colours to shapes at chance puts a drawn shape in the other prompted colour
about as often as in its own; docs/BASE_MODEL.md section 14 has the figures. Per tag it also
counts what the drawings hold beyond the prompt: the mean number of objects (shapes and unknown
blobs) past the ones the prompt names, and the share of images with any (section 17).
"""

from __future__ import annotations

import argparse
import collections
import json

from illume_core.eval.evaluations import extra_objects
from illume_core.world.geneval import TAGS
from storage.catalog import query
from storage.registry import get_lake

OUTCOMES = ("own colour", "other prompted colour (swap)", "colour not in the prompt", "shape not drawn")


def outcome(want: dict, colours: list[str], objects: list[dict]) -> str:
    """What became of one prompted object {class, color} among the detected objects."""
    same = [o for o in objects if o["shape"] == want["class"]]
    if not same:
        return OUTCOMES[3]
    if any(o["color"] == want.get("color") for o in same):
        return OUTCOMES[0]
    others = {c for c in colours if c != want.get("color")}
    return OUTCOMES[1] if any(o["color"] in others for o in same) else OUTCOMES[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--round", type=int, default=0)
    ap.add_argument("--tags", nargs="+", default=["color_attr", "position"], choices=TAGS)
    ap.add_argument("--split", default="eval", choices=("eval", "heldout", "all"))
    args = ap.parse_args()
    split = "" if args.split == "all" else f"AND p.split = '{args.split}'"
    tags = ", ".join(f"'{t}'" for t in args.tags)
    rows = query(
        get_lake(args.lake),
        f"""SELECT j.tag, j.correct, j.details, p.metadata
            FROM judgments j JOIN (SELECT DISTINCT prompt_id, metadata, split FROM prompts) p USING (prompt_id)
            WHERE j.round = {args.round} AND j.tag IN ({tags}) {split}""",
    ).to_pylist()
    if not rows:
        raise SystemExit(f"no judgments of tags {args.tags} in round {args.round} of {args.lake}")
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    images: collections.Counter = collections.Counter()
    extra: dict[str, list[int]] = collections.defaultdict(list)
    for r in rows:
        include = json.loads(r["metadata"])["include"]
        details = json.loads(r["details"])
        objects = details["objects"]
        extra[r["tag"]].append(extra_objects(sum(int(c.get("count", 1)) for c in include), details))
        colours = [i.get("color") for i in include]
        images[r["tag"]] += 1
        for want in include:
            counts[r["tag"]][outcome(want, colours, objects)] += 1
    out = {}
    for tag in args.tags:
        n = sum(counts[tag].values())
        out[tag] = {
            "images": images[tag],
            "objects": n,
            **{k: counts[tag][k] for k in OUTCOMES},
            # among the drawn shapes in a prompted colour, the share in the wrong one (0.5: chance)
            "swap_share": round(
                counts[tag][OUTCOMES[1]] / max(1, counts[tag][OUTCOMES[0]] + counts[tag][OUTCOMES[1]]), 3
            ),
            "extra_objects_mean": round(sum(extra[tag]) / max(1, len(extra[tag])), 2),
            "images_with_extra": round(sum(e > 0 for e in extra[tag]) / max(1, len(extra[tag])), 3),
        }
    print(json.dumps({"lake": args.lake, "round": args.round, "split": args.split, **out}, indent=2))


if __name__ == "__main__":
    main()
