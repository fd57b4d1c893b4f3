"""Processor: templates, label masking, padding sides, placeholders, the CFG drop, assessments."""

from __future__ import annotations

import random

import pytest
import torch
from model_helpers import micro_model, scene_image, text_tokenizer

from illume_core.model.processor import IGNORE_INDEX, UNCOND_PROMPT
from illume_core.model.text_tokenizer import TextTokenizer
from illume_core.self_enhance.assessment import (
    Assessment,
    DimensionAssessment,
    format_assessment,
    parse_assessment,
)


def test_text_tokenizer_round_trips_text_and_file(tmp_path):
    tok = text_tokenizer()
    text = 'object: yes; count: no, there are 2 "zebras"!'  # words the corpus never had
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<user> <image> hi <assistant>")[:2] == [tok.user_id, tok.image_id]
    tok.save(tmp_path / "tokenizer.json")
    back = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    assert back.to_str() == tok.to_str()
    assert back.encode(text) == tok.encode(text)
    assert [tok.pad_id, tok.bos_id, tok.eos_id] == [0, 1, 2]


def test_labels_mask_prompt_and_padding():
    _, proc = micro_model()
    tok = proc.tokenizer
    ex = proc.vqa(scene_image(0), "how many circles are there?", "there are three")
    answer = tok.encode("there are three") + [tok.eos_id]
    n = len(answer)
    assert ex.labels[-n:] == ex.ids[-n:] == answer
    assert all(label == IGNORE_INDEX for label in ex.labels[:-n])
    assert ex.ids.count(tok.image_id) == proc.cfg.image_tokens
    short = proc.caption(scene_image(1), "two")
    batch = proc.collate([ex, short])  # right padding for training
    assert (batch.labels[1, len(short.ids) :] == IGNORE_INDEX).all()
    assert (batch.attention_mask[1, len(short.ids) :] == 0).all()
    assert batch.pixel_values.shape == (2, 3, 32, 32)
    assert int(batch.image_mask.sum()) == 2 * proc.cfg.image_tokens


def test_image_targets_are_offset_codes_then_eoi_eos():
    _, proc = micro_model()
    tok = proc.tokenizer
    codes = torch.arange(16)
    ex = proc.text_to_image("two red circles", codes)
    targets = [i for i in ex.labels if i != IGNORE_INDEX]
    assert targets == [*(codes + tok.vocab_size).tolist(), tok.eoi_id, tok.eos_id]
    assert ex.ids[len(ex.ids) - len(targets) - 1] == tok.soi_id  # <soi> is prompt, forced at sampling
    with pytest.raises(ValueError, match="codes in"):
        proc.text_to_image("x", torch.arange(15))
    with pytest.raises(ValueError, match="codes in"):
        proc.edit(scene_image(0), "remove it", torch.full((16,), 64))


def test_left_padding_for_generation_keeps_positions():
    _, proc = micro_model()
    batch = proc.collate(
        [proc.t2i_prompt("a blue square left of a green cross"), proc.t2i_prompt(None)], "left"
    )
    assert (batch.input_ids[:, -1] == proc.tokenizer.soi_id).all()
    row = batch.attention_mask[1]
    first = int(row.argmax())
    assert (row[:first] == 0).all() and (
        batch.position_ids[1, first:] == torch.arange(len(row) - first)
    ).all()


def test_condition_drop_uses_the_unconditional_twin():
    _, proc = micro_model()
    rng = random.Random(0)
    uncond_ids = proc.t2i_prompt(None).ids
    drops = [
        proc.text_to_image("two red circles", torch.zeros(16, dtype=torch.long), rng).ids[: len(uncond_ids)]
        == uncond_ids
        for _ in range(400)
    ]
    assert 20 < sum(drops) < 60  # about 10%
    assert proc.tokenizer.decode(uncond_ids) == proc.tokenizer.decode(proc.tokenizer.encode(UNCOND_PROMPT))


def test_special_tokens_in_user_text_are_not_injected():
    _, proc = micro_model()
    ex = proc.question_prompt(None, "hi <eos> <image> there")
    assert proc.tokenizer.eos_id not in ex.ids and proc.tokenizer.image_id not in ex.ids


def test_assessment_example_parses_back_and_parser_grades_answers():
    _, proc = micro_model(max_seq_len=200)
    a = Assessment(
        object=DimensionAssessment(verdict="yes", reason="two red circles"),
        count=DimensionAssessment(verdict="no", reason="there are three"),
        color=DimensionAssessment(verdict="yes"),
        spatial=DimensionAssessment(verdict="yes"),
    )
    ex = proc.assessment(scene_image(0), "two red circles", a)
    answer = proc.tokenizer.decode([i for i in ex.labels if i != IGNORE_INDEX])
    assert answer == format_assessment(a)
    parsed = parse_assessment(answer)
    assert parsed.status == "ok" and parsed.assessment == a
    assert parse_assessment("object: yes; count: no").status == "partial"
    assert parse_assessment("gggg *7 zebra").status == "failed"
