"""Reformat strategies, conversation examples, evaluation arithmetic, engine determinism, stages."""

import collections
import dataclasses
import json
import random

import pytest
import torch
from model_helpers import micro_model, save_micro_checkpoint

from illume_core.eval.evaluations import agreement, tag_scores
from illume_core.model.engine import Engine, assessment_fields, sample_seed
from illume_core.self_enhance.reformat import check_strategies, reformat_round, tag_repeats
from illume_core.train.data import BaseCorpus, CorpusSpec, SelfExample, StageData, conversation_example
from illume_core.train.recipes import RECIPES, get_recipe
from illume_core.train.stages import fit_stage, stage_groups
from illume_core.world.geneval import TAGS, parse_line
from illume_core.world.scenes import render, sample_scene

META = parse_line(
    '{"tag": "counting", "include": [{"class": "square", "count": 2}], '
    '"exclude": [{"class": "square", "count": 3}], "prompt": "a photo of two squares"}'
)


def _sample(i, pid="p1"):
    return {"prompt_id": pid, "sample_index": i, "sample_key": f"r1/ck/{pid}/{i}", "checkpoint_id": "ck"}


def _assess(i, verdicts, pid="p1"):
    row = {"prompt_id": pid, "sample_index": i}
    for d, v in zip(("object", "count", "color", "spatial"), verdicts, strict=True):
        row[f"{d}_verdict"] = v
        row[f"{d}_reason"] = "" if v == "yes" else "three squares"
    return row


def test_reformat_assessment_strategy():
    samples = [_sample(0), _sample(1), _sample(2)]
    assessed = [
        _assess(0, "yyyy".replace("y", "y")),
        _assess(1, ["yes", "no", "yes", "yes"]),
        _assess(2, [None, None, None, None]),
    ]
    assessed[0] = _assess(0, ["yes"] * 4)
    rows = reformat_round(samples, assessed, {"p1": META}, ["assessment"], round=1)
    assert len(rows) == 2  # the unparsed sample 2 gives nothing
    good, bad = rows
    turns = json.loads(good["conversation"])
    assert (
        len(turns) == 2
        and turns[0]["content"].startswith("<image:0> ")
        and "count: yes" in turns[1]["content"]
    )
    turns = json.loads(bad["conversation"])
    assert len(turns) == 4 and "count: no, three squares" in turns[1]["content"]
    assert turns[2]["content"] == "the image is wrong; draw it again correctly: a photo of two squares"
    assert turns[3]["content"] == "<image:1>" and bad["image_refs"] == ["r1/ck/p1/1", "r1/ck/p1/0"]
    assert all(r["round"] == 1 and r["strategy"] == "assessment" for r in rows)


def test_reformat_bad_without_accepted_has_no_correction_and_t2i_only_accepted():
    samples = [_sample(0), _sample(1)]
    assessed = [_assess(0, ["yes", "no", "yes", "yes"]), _assess(1, ["no", "yes", "yes", "yes"])]
    rows = reformat_round(samples, assessed, {"p1": META}, ["assessment", "accepted_t2i"], round=1)
    assert [len(json.loads(r["conversation"])) for r in rows] == [2, 2]
    assert all(r["strategy"] == "assessment" for r in rows)
    assessed[0] = _assess(0, ["yes"] * 4)
    rows = reformat_round(samples, assessed, {"p1": META}, ["accepted_t2i", "preference"], round=1)
    kinds = sorted(r["strategy"] for r in rows)
    assert kinds == ["accepted_t2i", "preference"]
    pref = next(r for r in rows if r["strategy"] == "preference")
    assert pref["image_refs"] == ["r1/ck/p1/0", "r1/ck/p1/1"]
    again = reformat_round(samples, assessed, {"p1": META}, ["accepted_t2i", "preference"], round=1)
    assert [r["example_id"] for r in again] == [r["example_id"] for r in rows]


def test_balanced_t2i_repeats_accepted_images_of_rare_tags():
    assert tag_repeats({"colors": 41, "two_object": 29, "counting": 9, "position": 4}) == {
        "colors": 1,
        "two_object": 1,
        "counting": 4,  # round(41 / 9) = 5, capped
        "position": 4,
    }
    assert tag_repeats({"colors": 8, "counting": 4}, cap=1) == {"colors": 1, "counting": 1}
    with pytest.raises(ValueError, match="cap"):
        tag_repeats({"colors": 1}, cap=0)
    colour = parse_line(
        '{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], '
        '"prompt": "a photo of a red circle"}'
    )
    samples = [_sample(i, "pc") for i in range(4)] + [_sample(0, "p1"), _sample(1, "p1")]
    assessed = [_assess(i, ["yes"] * 4, "pc") for i in range(4)]
    assessed += [_assess(0, ["yes"] * 4, "p1"), _assess(1, ["no", "yes", "yes", "yes"], "p1")]
    meta = {"pc": colour, "p1": META}
    rows = reformat_round(samples, assessed, meta, ["balanced_t2i"], round=1)
    # four accepted colour images once each; the one accepted counting image four times
    assert [r["prompt_id"] for r in rows] == ["p1"] * 4 + ["pc"] * 4
    assert {r["source_sample"] for r in rows if r["prompt_id"] == "p1"} == {"r1/ck/p1/0"}
    assert len({r["example_id"] for r in rows}) == len(rows)  # copies get ids of their own
    plain = reformat_round(samples, assessed, meta, ["accepted_t2i"], round=1)
    assert len(plain) == 5 and {json.loads(r["conversation"])[0]["content"] for r in plain} == {
        json.loads(r["conversation"])[0]["content"] for r in rows
    }


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="choose from assessment, accepted_t2i, balanced_t2i, preference"):
        check_strategies(["dpo"])
    with pytest.raises(ValueError, match="choose one of them"):
        check_strategies(["accepted_t2i", "balanced_t2i"])


def test_conversation_example_two_turns():
    model, proc = micro_model()
    cfg = proc.cfg
    scene = sample_scene(random.Random(0), cfg.image_size)
    img = render(scene)
    codes = torch.arange(cfg.image_tokens) % cfg.codebook_size
    ex = SelfExample(
        conversation=[
            {"role": "user", "content": "<image:0> how many circles are there?"},
            {"role": "assistant", "content": "object: yes; count: no, two"},
            {"role": "user", "content": "a photo of two circles"},
            {"role": "assistant", "content": "<image:1>"},
        ],
        images=[img, img],
        codes=[codes, codes],
    )
    e = conversation_example(proc, ex)
    assert len(e.images) == 1  # one image shown; the second is drawn as codes
    assert e.ids.count(proc.tokenizer.bos_id) == 1
    targets = [t for t, lab in zip(e.ids, e.labels, strict=True) if lab != -100]
    assert targets[-2:] == [proc.tokenizer.eoi_id, proc.tokenizer.eos_id]
    assert (
        torch.tensor(targets[-2 - cfg.image_tokens : -2]) - proc.image_token_offset
    ).tolist() == codes.tolist()
    with pytest.raises(ValueError, match="alternates"):
        conversation_example(proc, SelfExample(conversation=ex.conversation[:3], images=[img]))


def test_tag_scores_and_agreement():
    js = [
        {"tag": "counting", "correct": True},
        {"tag": "counting", "correct": False},
        {"tag": "colors", "correct": True},
    ]
    s = tag_scores(js)
    assert s["counting"] == (0.5, 2) and s["colors"] == (1.0, 1) and s["overall"] == (0.75, 3)
    truth = json.dumps({"dimensions": {"object": True, "count": False, "color": True, "spatial": True}})
    judgments = [{"prompt_id": "p", "sample_index": 0, "details": truth}]
    a = {
        "prompt_id": "p",
        "sample_index": 0,
        "object_verdict": "yes",
        "count_verdict": "yes",
        "color_verdict": None,
        "spatial_verdict": "yes",
    }
    ag = agreement([a], judgments)
    assert ag["object"] == (1.0, 1) and ag["count"] == (0.0, 1) and ag["color"] == (0.0, 1)
    assert ag["overall"] == (0.5, 4)


def test_assessment_fields_never_raise():
    row = assessment_fields("garbage \x00 ∑")
    assert row["parse_status"] == "failed" and row["object_verdict"] is None
    row = assessment_fields("object: yes; count: no, two; color: yes; spatial: yes")
    assert row["parse_status"] == "ok" and row["count_verdict"] == "no" and row["count_reason"] == "two"


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "ck"
    return path, save_micro_checkpoint(path)


def test_engine_sample_is_seeded_per_sample(micro_checkpoint):
    path, _ = micro_checkpoint
    e = Engine(path)
    items = [
        {
            "prompt_id": f"p{i}",
            "prompt": "a photo of a red circle",
            "sample_index": 0,
            "seed": sample_seed(1, f"p{i}", 0),
        }
        for i in range(3)
    ]
    alone = e.sample(items[1:2])
    batch = e.sample(items, batch_size=3)
    assert alone[0]["image_tokens"] == batch[1]["image_tokens"] and alone[0]["png"] == batch[1]["png"]
    assert batch[0]["image_tokens"] != batch[1]["image_tokens"]
    assert sample_seed(1, "p1", 0) == sample_seed(1, "p1", 0) != sample_seed(2, "p1", 0)
    rows = e.assess(
        [{"prompt_id": "p0", "sample_index": 0, "prompt": "a photo of a red circle", "png": batch[0]["png"]}],
        max_new_tokens=8,
    )
    assert rows[0]["parse_status"] in ("partial", "failed") and "png" not in rows[0]
    # the default decodes under the assessment grammar: even 8 tokens of an untrained model
    # start the fixed format; free decoding of the same model does not
    assert rows[0]["raw_text"].startswith("object: ")
    free = e.assess([{**items[0], "png": batch[0]["png"]}], max_new_tokens=8, constrained=False)
    assert not free[0]["raw_text"].startswith("object: ")


def test_stage_recipes_train_what_they_say(micro_checkpoint):
    _, parts = micro_checkpoint
    assert set(RECIPES) == {"stage0", "stage1", "stage2", "stage3"}
    assert get_recipe("stage2", "tiny").lrs["llm"] == pytest.approx(5e-5 * 10 * 3)  # tiny's stage-2 factor
    assert get_recipe("stage3", "tiny").lrs["llm"] == pytest.approx(2e-5 * 10)
    assert get_recipe("stage2", "tiny-256").lrs["llm"] == pytest.approx(5e-5 * 10)
    groups = stage_groups(parts.model, get_recipe("stage0"))
    assert [g.name for g in groups] == ["llm"]
    assert not any(p.requires_grad for p in parts.model.aligner.parameters())
    base = BaseCorpus(parts.cfg, CorpusSpec(n_t2i=12, n_scenes=6, n_assess=6))
    before = parts.model.aligner.fc1.weight.detach().clone()
    text_rows = (
        parts.model.llm.get_input_embeddings().weight[: parts.model.image_token_offset].detach().clone()
    )
    st = fit_stage(parts, get_recipe("stage1", steps=2, batch_size=2), base)
    assert st.step == 2 and all(torch.isfinite(torch.tensor(st.losses)))
    assert not torch.equal(before, parts.model.aligner.fc1.weight)  # the adapter learned
    torch.testing.assert_close(
        text_rows, parts.model.llm.get_input_embeddings().weight[: parts.model.image_token_offset]
    )


def test_stage_data_batches_are_a_function_of_their_index(micro_checkpoint):
    _, parts = micro_checkpoint
    base = BaseCorpus(parts.cfg, CorpusSpec(n_t2i=12, n_scenes=6, n_assess=6))
    r = get_recipe("stage3", steps=5, batch_size=3)
    a = StageData(base, parts.processor, parts.semantic.encode, r, seed=1)
    b = StageData(base, parts.processor, parts.semantic.encode, r, seed=1).skip(2)
    next(a), next(a)
    torch.testing.assert_close(next(a).input_ids, next(b).input_ids)


def test_t2i_tag_weights_set_how_many_pairs_each_tag_gets(micro_checkpoint):
    _, parts = micro_checkpoint
    assert CorpusSpec(n_t2i=60).t2i_per_tag() == dict.fromkeys(TAGS, 10)
    spec = CorpusSpec(n_t2i=70, n_scenes=2, n_assess=2, t2i_tag_weights=(0.5, 1, 1.5, 0.5, 1.5, 1.5))
    want = spec.t2i_per_tag()
    assert want == {
        "single_object": 6,
        "two_object": 11,
        "counting": 16,
        "colors": 5,
        "position": 16,
        "color_attr": 16,
    }
    base = BaseCorpus(parts.cfg, spec)
    got = collections.Counter(m.tag for m, _ in base.t2i)
    assert dict(got) == want
    assert base.describe()["t2i_per_tag"] == want
    # a tag's weighted draw is a prefix of its unweighted one: weights choose how far each goes
    equal = BaseCorpus(parts.cfg, CorpusSpec(n_t2i=60, n_scenes=2, n_assess=2))
    assert {m.prompt for m, _ in base.t2i if m.tag == "colors"} <= {
        m.prompt for m, _ in equal.t2i if m.tag == "colors"
    }
    for bad in ((1, 1, 1), (1, 1, 1, 1, 1, -1), (0,) * 6):
        with pytest.raises(ValueError, match="t2i_tag_weights"):
            CorpusSpec(n_t2i=6, t2i_tag_weights=bad).t2i_per_tag()


def test_reading_order_corpus_starts_named_objects_in_prompt_order(micro_checkpoint):
    from illume_core.world.prompts import in_reading_order

    _, parts = micro_checkpoint
    cell = parts.cfg.gen_cell
    spec = CorpusSpec(n_t2i=120, n_scenes=2, n_assess=2)
    assert spec.reading_order  # the default
    base = BaseCorpus(parts.cfg, spec)
    plain = BaseCorpus(parts.cfg, dataclasses.replace(spec, reading_order=False))
    assert sorted(m.prompt for m, _ in base.t2i) == sorted(m.prompt for m, _ in plain.t2i)  # the same prompts
    assert all(in_reading_order(m, s, cell) for m, s in base.t2i)
    assert not all(in_reading_order(m, s, cell) for m, s in plain.t2i)
    assert base.describe()["reading_order"] is True and plain.describe()["reading_order"] is False


def test_corpus_without_distractors_draws_exactly_the_named_objects(micro_checkpoint):
    _, parts = micro_checkpoint
    spec = CorpusSpec(n_t2i=120, n_scenes=2, n_assess=2)
    with_extra = BaseCorpus(parts.cfg, dataclasses.replace(spec, distractors=TAGS))
    exact = BaseCorpus(parts.cfg, dataclasses.replace(spec, distractors=()))
    no_count = BaseCorpus(parts.cfg, spec)  # the default: counting scenes without distractors

    def named(m):
        return sum(c.count for c in m.include)

    assert any(len(s.objects) > named(m) for m, s in with_extra.t2i)
    assert all(len(s.objects) == named(m) for m, s in exact.t2i)
    # one tag without: its scenes hold exactly the counted objects, the others still get extra ones
    assert all(len(s.objects) == named(m) for m, s in no_count.t2i if m.tag == "counting")
    assert any(len(s.objects) > named(m) for m, s in no_count.t2i if m.tag != "counting")
    assert exact.describe()["distractors"] == [] and with_extra.describe()["distractors"] == list(TAGS)
    with pytest.raises(ValueError, match="distractors lists tags"):
        dataclasses.replace(spec, distractors=("counting", "nonsense"))
