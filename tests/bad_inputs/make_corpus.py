"""Write the bad-input corpus: small files under tests/bad_inputs/ and the manifest cases.json.

Deterministic (fixed seeds, no timestamps): running it again rewrites the same bytes. Each case
names its input, the entry point it drives and the outcome expected: "error" (a message matching
every regex in `message`), "rejected" (counted and recorded, the rest of the input still used)
or "ok". `{input}` in a regex stands for the input's file name. Run:

    .venv/bin/python tests/bad_inputs/make_corpus.py
"""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from illume_core.world.geneval import parse_line
from illume_core.world.prompts import scene_for
from illume_core.world.scenes import render

HERE = Path(__file__).resolve().parent
GOOD_LINE = {
    "tag": "single_object",
    "include": [{"class": "circle", "count": 1}],
    "prompt": "a photo of a circle",
}
CASES: list[dict] = []


def case(
    id: str, kind: str, entry: str, input: object, expect: str, message: list[str] | None = None
) -> None:
    """Add one case to the manifest."""
    CASES.append(
        {"id": id, "kind": kind, "entry": entry, "input": input, "expect": expect, "message": message or []}
    )


def good_image(size: int = 64) -> Image.Image:
    """A correct ShapesWorld image of GOOD_LINE (one circle)."""
    return render(scene_for(parse_line(json.dumps(GOOD_LINE)), random.Random(7), size))


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its CRC (so a reader gets past the CRC check to the lie in the header)."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def header_bomb(width: int, height: int) -> bytes:
    """A valid-looking 8-bit greyscale PNG whose header claims width x height and holds one row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def write(rel: str, data: bytes | str) -> str:
    path = HERE / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", newline="")
    else:
        path.write_bytes(data)
    return rel


def images() -> None:
    good = png(good_image())
    rgba = good_image().convert("RGBA")
    rgba.putalpha(200)
    g16 = Image.fromarray(np.asarray(good_image().convert("L"), dtype=np.uint16) * 257)  # 16-bit grey
    jpeg = io.BytesIO()
    good_image().save(jpeg, format="JPEG", quality=95)
    broken_crc = bytearray(good)
    broken_crc[60] ^= 0xFF  # inside the first IDAT chunk's data: its CRC no longer matches
    files = {
        "empty.png": b"",
        "not_a_png.png": b"hello, I am a text file named like an image\n",
        "truncated.png": good[: len(good) // 2],
        "bad_crc.png": bytes(broken_crc),
        "header_bomb.png": header_bomb(100_000, 100_000),
        "jpeg_named_png.png": jpeg.getvalue(),
        "rgba.png": png(rgba),
        "grey_L.png": png(good_image().convert("L")),
        "grey_16bit.png": png(g16),
        "palette_P.png": png(good_image().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)),
        "tiny_8x8.png": png(good_image().resize((8, 8), Image.Resampling.NEAREST)),
        "wide_100x60.png": png(good_image(64).resize((100, 60), Image.Resampling.NEAREST)),
        "huge_canvas_256.png": png(good_image(256)),
    }
    for name, data in files.items():
        write(f"images/{name}", data)
    unreadable = {
        "empty.png": (r"cannot read image", r"re-save it as a PNG"),
        "not_a_png.png": (r"cannot read image", r"re-save it as a PNG"),
        "truncated.png": (r"cannot read image", r"re-save it as a PNG"),
        "bad_crc.png": (r"cannot read image", r"re-save it as a PNG"),
        "header_bomb.png": (r"10000000000 pixels", r"decompression bomb", r"resize it to the canvas size"),
        "tiny_8x8.png": (r"8x8 pixels", r"resize it"),
    }
    for name in files:
        rel = f"images/{name}"
        if name in unreadable:
            case(f"judge-{name}", "image", "illume judge", rel, "rejected", [r"{input}", *unreadable[name]])
        else:
            case(f"judge-{name}", "image", "illume judge", rel, "ok")
    from_png = {
        "empty.png": ("error", [r"non-empty PNG bytes"]),
        "not_a_png.png": ("error", [r"not a PNG", r"pass png_bytes\(\) output"]),
        "jpeg_named_png.png": ("error", [r"not a PNG", r"pass png_bytes\(\) output"]),
        "truncated.png": ("error", [r"corrupt PNG", r"re-encode"]),
        "bad_crc.png": ("error", [r"corrupt PNG", r"re-encode"]),
        "header_bomb.png": (
            "error",
            [r"10000000000 pixels", r"decompression bomb", r"re-render it at the canvas size"],
        ),
        "rgba.png": ("ok", []),
        "grey_16bit.png": ("ok", []),
    }
    for name, (expect, msg) in from_png.items():
        case(f"from_png-{name}", "image", "from_png", f"images/{name}", expect, msg)
    # a real decompression bomb (6000 x 6000 of zeros, 36 M pixels, about 40 KB) is made at test time
    case(
        "judge-zero_bomb_6000",
        "image",
        "judge_image",
        {"generate": "zeros", "side": 6000},
        "error",
        [r"6000x6000 pixels", r"resize it"],
    )
    case(
        "ask-corrupt-image",
        "image",
        "illume ask",
        {"image": "images/truncated.png"},
        "error",
        [r"{input}", r"re-save it as a PNG"],
    )


def prompt_files() -> None:
    good = json.dumps(GOOD_LINE)
    two = json.dumps(
        {**GOOD_LINE, "include": [{"class": "square", "count": 1}], "prompt": "a photo of a square"}
    )
    lines = {
        "missing_keys.jsonl": [good, json.dumps({"tag": "single_object", "prompt": "a photo of a circle"})],
        "wrong_types.jsonl": [
            good,
            json.dumps({"tag": "counting", "include": [{"class": "circle", "count": "two"}], "prompt": "x"}),
            json.dumps({"tag": "single_object", "include": "circle", "prompt": "a photo of a circle"}),
            json.dumps({**GOOD_LINE, "prompt": 42}),
        ],
        "unknown_tag.jsonl": [good, json.dumps({**GOOD_LINE, "tag": "texture"})],
        "unknown_key.jsonl": [good, json.dumps({**GOOD_LINE, "style": "watercolour"})],
        "negative_count.jsonl": [
            good,
            json.dumps({"tag": "counting", "include": [{"class": "circle", "count": -3}], "prompt": "x"}),
        ],
        "not_objects.jsonl": [good, "[1, 2, 3]", '"a photo of a circle"', "null", "{not json"],
        "bad_position.jsonl": [
            good,
            json.dumps(
                {
                    "tag": "position",
                    "include": [{"class": "circle"}, {"class": "square", "position": ["left of", 5]}],
                    "prompt": "a photo of a square left of a circle",
                }
            ),
        ],
        "unknown_relation.jsonl": [
            good,
            json.dumps(
                {
                    "tag": "position",
                    "include": [{"class": "circle"}, {"class": "square", "position": ["inside of", 0]}],
                    "prompt": "x",
                }
            ),
        ],
        "out_of_vocabulary.jsonl": [
            good,
            json.dumps(
                {"tag": "single_object", "include": [{"class": "bench"}], "prompt": "a photo of a bench"}
            ),
        ],
        "all_bad.jsonl": ["{}", json.dumps({"tag": "texture"})],
    }
    rejected_msg = {
        "missing_keys.jsonl": r"{input}:2: .*include",
        "wrong_types.jsonl": r"{input}:2: .*count",
        "unknown_tag.jsonl": r"{input}:2: .*tag",
        "unknown_key.jsonl": r"{input}:2: .*style",
        "negative_count.jsonl": r"{input}:2: .*greater than or equal to 1",
        "not_objects.jsonl": r"{input}:2: expected a JSON object",
        "bad_position.jsonl": r"{input}:2: .*position.*include clause 5",
        "unknown_relation.jsonl": r"{input}:2: .*unknown relation 'inside of'",
        "out_of_vocabulary.jsonl": r"{input}:2: .*out of vocabulary",
    }
    for name, body in lines.items():
        rel = write(f"prompts/{name}", "\n".join(body) + "\n")
        if name == "all_bad.jsonl":
            case(
                f"render-{name}",
                "prompt file",
                "illume render",
                rel,
                "error",
                [r"{input}", r"give a ShapesWorld"],
            )
        else:
            case(f"render-{name}", "prompt file", "illume render", rel, "rejected", [rejected_msg[name]])
    case(
        "read_metadata-missing_keys",
        "prompt file",
        "read_metadata",
        "prompts/missing_keys.jsonl",
        "error",
        [r"{input}:2:", r"include"],
    )
    # empty and whitespace-only lines are skipped; folder numbers stay line numbers - 1
    rel = write("prompts/empty_lines.jsonl", "\n" + good + "\n\n   \n\t\n" + two + "\n\n")
    case("render-empty_lines", "prompt file", "illume render", rel, "ok")
    rel = write("prompts/crlf.jsonl", good + "\r\n" + two + "\r\n")
    case("render-crlf", "prompt file", "illume render", rel, "ok")
    rel = write("prompts/bom.jsonl", "\ufeff" + good + "\n" + two + "\n")
    case("render-utf8_bom", "prompt file", "illume render", rel, "ok")
    odd = [
        {**GOOD_LINE, "prompt": "a photo of a circle \U0001f7e2 \u202eelcric\u202c"},  # emoji, RTL override
        {**GOOD_LINE, "prompt": "a photo of a ci\u200brcle\u0301 \u00e9\u0000"},  # zero width, combining, NUL
        {**GOOD_LINE, "prompt": "a photo of a circle\u2028on two lines"},  # unicode line separator
    ]
    rel = write("prompts/odd_unicode.jsonl", "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in odd))
    case("render-odd_unicode", "prompt file", "illume render", rel, "ok")
    # latin-1 bytes on line 2: that line is refused, the others still render
    rel = write(
        "prompts/latin1_line.jsonl",
        (good + "\n").encode()
        + json.dumps({**GOOD_LINE, "prompt": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
        + b"\n"
        + (two + "\n").encode(),
    )
    case(
        "render-latin1_line",
        "prompt file",
        "illume render",
        rel,
        "rejected",
        [r"{input}:2: .*UTF-8", r"re-save"],
    )
    # prompts that look like SQL or paths: folder names are numbers, the text is stored as is
    tricky = [
        {**GOOD_LINE, "prompt": "a photo of a circle'; DROP TABLE samples; --"},
        {**GOOD_LINE, "prompt": "../../etc/passwd"},
        {**GOOD_LINE, "prompt": "/tmp/evil/00000"},
        {**GOOD_LINE, "prompt": 'a "circle" \\ with C:\\Windows\\system32 and %s {0} $(rm -rf /)'},
    ]
    rel = write("prompts/sql_and_paths.jsonl", "".join(json.dumps(m) + "\n" for m in tricky))
    case("render-sql_and_paths", "prompt file", "illume render", rel, "ok")


def results_files() -> None:
    good = json.dumps(
        {"filename": "x/00000/samples/0000.png", "tag": "single_object", "correct": True, "metadata": "{}"}
    )
    files = {
        "not_json.jsonl": (
            good + "\n{broken\n",
            "error",
            [r"{input}:2", r"expected keys filename, tag, correct"],
        ),
        "missing_correct.jsonl": (
            good + "\n" + json.dumps({"filename": "a.png", "tag": "colors"}) + "\n",
            "error",
            [r"{input}:2", r"correct"],
        ),
        "array_line.jsonl": (good + "\n[1, 2]\n", "error", [r"{input}:2", r"expected keys"]),
        "empty.jsonl": ("", "ok", []),
    }
    for name, (body, expect, msg) in files.items():
        case(f"scores-{name}", "results file", "illume scores", write(f"results/{name}", body), expect, msg)


def configs() -> None:
    case(
        "preset-unknown",
        "config",
        "get_preset",
        {"name": "gpt-5"},
        "error",
        [r"'gpt-5'", r"choose one of: tiny"],
    )
    case("preset-empty-name", "config", "get_preset", {"name": ""}, "error", [r"''", r"choose one of"])
    bad = {
        "negative-image-size": ({"image_size": -64}, [r"image_size", r"greater than or equal to 32"]),
        "zero-patch": ({"patch_size": 0}, [r"patch_size", r"greater than or equal to 1"]),
        "absurd-image-size": ({"image_size": 1_000_000}, [r"image_size", r"less than or equal to 1024"]),
        "absurd-hidden-size": ({"hidden_size": 2**40}, [r"hidden_size", r"less than or equal to"]),
        "absurd-layers": ({"num_layers": 10**6}, [r"num_layers", r"less than or equal to"]),
        "absurd-codebook": ({"codebook_size": 10**12}, [r"codebook_size", r"less than or equal to"]),
        "negative-rope": ({"rope_theta": -1.0}, [r"rope_theta", r"greater than 0"]),
        "string-size": ({"image_size": "big"}, [r"image_size", r"valid integer"]),
        "unknown-field": ({"dropout": 0.1}, [r"dropout", r"Extra inputs are not permitted"]),
        "not-a-multiple": (
            {"image_size": 102},
            [r"image_size 102 is not a multiple of patch_size 4", r"choose"],
        ),
        "pool-not-a-divisor": (
            {"image_size": 100, "gen_patch_size": 4},
            [r"adapter_pool 2 does not divide the 25x25 grid", r"choose a divisor"],
        ),
        "heads-mismatch": ({"num_heads": 5}, [r"hidden_size must divide by num_heads"]),
    }
    for name, (overrides, msg) in bad.items():
        case(f"config-{name}", "config", "get_preset", {"name": "tiny", "overrides": overrides}, "error", msg)
    case(
        "config-ok-override", "config", "get_preset", {"name": "tiny", "overrides": {"image_size": 32}}, "ok"
    )


def checkpoints() -> None:
    mutations = {
        "tampered-model": (
            {"flip": "model.safetensors"},
            [r"model\.safetensors", r"restore it or use another"],
        ),
        "tampered-config": ({"flip": "config.json"}, [r"config\.json", r"restore it or use another"]),
        "missing-text-tokenizer": ({"delete": "tokenizer.json"}, [r"tokenizer\.json", r"re-save it"]),
        "missing-semantic-tokenizer": (
            {"delete": "tokenizer.safetensors"},
            [r"tokenizer\.safetensors", r"re-save"],
        ),
        "missing-manifest": ({"delete": "manifest.json"}, [r"manifest\.json", r"re-save the checkpoint"]),
        "garbage-manifest": ({"write": ["manifest.json", "{not json"]}, [r"manifest\.json", r"re-save"]),
        "manifest-without-files": (
            {"write": ["manifest.json", '{"id": "x"}']},
            [r"manifest\.json", r"re-save"],
        ),
        "not-a-folder": ({"replace_with_file": True}, [r"manifest\.json", r"checkpoint folder"]),
    }
    for name, (mutation, msg) in mutations.items():
        case(f"checkpoint-{name}", "checkpoint", "load_checkpoint", mutation, "error", msg)
    for cmd in ("illume ask", "illume generate"):
        verb = cmd.split()[1]
        case(
            f"{verb}-tampered-checkpoint",
            "checkpoint",
            cmd,
            {"flip": "model.safetensors"},
            "error",
            [r"model\.safetensors", r"restore it or use another"],
        )
        case(
            f"{verb}-missing-tokenizer",
            "checkpoint",
            cmd,
            {"delete": "tokenizer.json"},
            "error",
            [r"tokenizer\.json", r"re-save it"],
        )
    case(
        "ask-no-current-checkpoint", "checkpoint", "illume ask", {"no_lake": True}, "error", [r"--checkpoint"]
    )


def lakes() -> None:
    case(
        "lake-root-under-a-file",
        "lake",
        "Lake",
        {"root": "under_file"},
        "error",
        [r"{input}", r"pass a writable folder"],
    )
    case(
        "lake-root-is-a-file",
        "lake",
        "Lake",
        {"root": "is_file"},
        "error",
        [r"{input}", r"pass a writable folder"],
    )
    for stage in ("write_table", "manifest"):
        case(
            f"lake-full-at-{stage}",
            "lake",
            "Lake.write_partition",
            {"enospc_at": stage},
            "error",
            [
                r"table 'prompts', round 1",
                r"No space left on device",
                r"the lake is unchanged",
                r"Free space",
            ],
        )
    case(
        "lake-bad-part-name",
        "lake",
        "Lake.write_partition",
        {"part": "../../etc"},
        "error",
        [r"bad part name '\.\./\.\./etc'", r"Use \[A-Za-z0-9_.-\]"],
    )
    case(
        "lake-unknown-table",
        "lake",
        "Lake.write_partition",
        {"table": "../samples"},
        "error",
        [r"'\.\./samples'", r"unknown table", r"Known tables"],
    )
    for i, text in enumerate(
        [
            "a photo of a circle'; DROP TABLE samples; --",
            "../../etc/passwd",
            "Robert'); DELETE FROM prompts WHERE ('1'='1",
            'NUL \u0000 and quote " and backslash \\ and emoji \U0001f534',
        ]
    ):
        case(f"lake-prompt-text-{i}", "prompt text", "Lake.write_partition", {"prompt": text}, "ok")
    statements = {
        "attach": ("ATTACH '/tmp/illume-bad-input.duckdb' AS evil", r"ATTACH statements are refused"),
        "insert": ("INSERT INTO prompts VALUES (1)", r"INSERT statements are refused"),
        "drop": ("DROP VIEW samples", r"DROP statements are refused"),
        "copy": ("COPY samples TO '/tmp/illume-bad-input.csv'", r"COPY statements are refused"),
        "create": ("CREATE TABLE t AS SELECT 1", r"CREATE statements are refused"),
        "second-statement": ("SELECT 1; DROP VIEW prompts", r"DROP statements are refused"),
        "pragma": ("PRAGMA enable_profiling", r"PRAGMA statements are refused"),
        "install": ("INSTALL httpfs", r"LOAD statements are refused"),
        "set": ("SET threads = 1", r"SET statements are refused"),
        "detach": ("DETACH catalog", r"DETACH statements are refused"),
        "export": ("EXPORT DATABASE '/tmp/illume-bad-input-export'", r"EXPORT statements are refused"),
        "explain-analyze-copy": (
            "EXPLAIN ANALYZE COPY (SELECT 42) TO '/tmp/illume-bad-input-explain.csv'",
            r"COPY statements are refused",
        ),
        "commented-explain-analyze-copy": (
            "/* harmless */ explain analyse copy (select 1) to '/tmp/illume-bad-input-explain2.csv'",
            r"COPY statements are refused",
        ),
        "empty": ("   ", r"the query is empty"),
        "syntax": ("SELEC * FROM prompts", r"could not parse the query"),
    }
    for name, (sql, msg) in statements.items():
        case(f"sql-{name}", "sql", "illume sql", sql, "error", [r"refused", msg])
    case(
        "sql-unknown-table",
        "sql",
        "illume sql",
        "SELECT * FROM no_such_table",
        "error",
        [r"no_such_table", r"illume sql \"SHOW TABLES\""],
    )
    case("sql-explain-select", "sql", "illume sql", "EXPLAIN SELECT count(*) FROM prompts", "ok")


def model_outputs() -> None:
    outputs = {
        "empty": ("", "no 'dimension: yes/no' item"),
        "whitespace": (" \n\t ", "no 'dimension: yes/no' item"),
        "garbage": ("<img_17><img_17> ;;; ::: yes no maybe \u0000\ufffd", "no 'dimension: yes/no' item"),
        "endless-repeat": (
            {"repeat": "object: yes, a circle; ", "times": 200_000},
            "missing count, color, spatial",
        ),
        "endless-tokens": ({"repeat": "<img_3>", "times": 500_000}, "no 'dimension: yes/no' item"),
        "not-text": ({"bytes": "ff00fe"}, "no text to parse"),
        "none": ({"none": True}, "no text to parse"),
    }
    for name, (text, msg) in outputs.items():
        case(f"assessment-{name}", "model output", "parse_assessment", text, "rejected", [msg])
    case(
        "assessment-ok",
        "model output",
        "parse_assessment",
        "Object: YES, a circle\ncount: yes; colour: no, it is red; spatial: yes",
        "ok",
    )
    case(
        "decoder-nan-pixels",
        "model output",
        "to_pil",
        {"fill": "nan"},
        "error",
        [r"not finite", r"checkpoint"],
    )
    for value in ("nan", "inf"):
        case(
            f"train-loss-{value}",
            "loss",
            "train_loop",
            {"loss": value, "at_step": 2},
            "error",
            [
                rf"loss became {value} at step 2",
                r"no checkpoint was written",
                r"resume from the last checkpoint",
            ],
        )


def main() -> None:
    images()
    prompt_files()
    results_files()
    configs()
    checkpoints()
    lakes()
    model_outputs()
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    (HERE / "cases.json").write_text(json.dumps(CASES, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"wrote {len(CASES)} cases to {HERE / 'cases.json'}")


if __name__ == "__main__":
    main()
