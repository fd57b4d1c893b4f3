"""IllumeModel: presets build with the expected shapes, pretrained weights load, stages freeze
what they should, and a micro model overfits a tiny batch."""

from __future__ import annotations

import pytest
import torch
from model_helpers import micro_model, scene_image, text_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from illume_core.model.config import PRESETS, get_preset
from illume_core.model.unified import IllumeModel, count_parameters
from illume_core.train.recipes import get_recipe

torch.set_num_threads(1)  # two cores are shared; one thread avoids oversubscription


def _llm_params(c, vocab: int) -> int:
    """Llama parameter count by formula: embeddings + head, per layer attention + MLP + 2 norms, final norm."""
    kv = c.hidden_size * c.num_kv_heads // c.num_heads
    attn = 2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * kv
    mlp = 3 * c.hidden_size * c.intermediate_size
    return 2 * vocab * c.hidden_size + c.num_layers * (attn + mlp + 2 * c.hidden_size) + c.hidden_size


@pytest.mark.parametrize("name", ["tiny", "tiny-256", "small"])
def test_preset_builds_with_expected_shapes(name):
    cfg = PRESETS[name]
    model = IllumeModel(cfg, cfg.text_vocab_size)
    assert model.vocab_size == cfg.text_vocab_size + cfg.codebook_size
    assert model.image_token_offset == cfg.text_vocab_size
    assert model.gen_embed_rows().shape == (cfg.codebook_size, cfg.hidden_size)
    assert model.gen_head_rows().shape == (cfg.codebook_size, cfg.hidden_size)
    # the pattern tokenizer's code rows sit beside a text-only Llama, factorized by mask and colour
    llm_vocab = cfg.text_vocab_size if model.factorized else model.vocab_size
    assert count_parameters(model.llm) == _llm_params(cfg, llm_vocab)
    if model.factorized:
        # mask + colour rows for embedding and head, and the two maps of a mask's pixels
        pixels = cfg.gen_cell * cfg.gen_cell
        assert count_parameters(model.gen_codes) == 2 * (cfg.code_masks + 10 + pixels) * cfg.hidden_size
    with torch.no_grad():
        feats = model.aligner(model.vision_model(torch.rand(1, 3, cfg.image_size, cfg.image_size)))
        logits = model.image_logits(torch.zeros(2, cfg.hidden_size))
    assert feats.shape == (1, cfg.understanding_tokens, cfg.hidden_size)
    assert logits.shape == (2, cfg.codebook_size)


def test_adapter_pool_merges_each_block_of_neighbouring_cells():
    from illume_core.model.unified import Aligner

    torch.manual_seed(0)
    al = Aligner(vision_width=3, hidden_size=8, grid=4, pool=2)
    x = torch.randn(2, 16, 3)  # a 4x4 grid, row-major
    out = al(x)
    assert out.shape == (2, 4, 8)
    # position 1 of the merged 2x2 grid is cells (0,2), (0,3), (1,2), (1,3) = 2, 3, 6, 7, in that order
    block = torch.cat([x[:, 2], x[:, 3], x[:, 6], x[:, 7]], -1)  # (2, 12)
    torch.testing.assert_close(out[:, 1], al.fc2(torch.nn.functional.gelu(al.fc1(block))))
    # changing a cell outside the block leaves that position alone
    y = x.clone()
    y[:, 0] += 1
    torch.testing.assert_close(al(y)[:, 1], out[:, 1])
    with pytest.raises(ValueError, match="adapter_pool 3 does not divide"):
        get_preset("tiny-256", patch_size=4, adapter_pool=3)


def test_illume_7b_builds_on_meta_with_its_parameter_count():
    cfg = PRESETS["illume-7b"]
    with torch.device("meta"):
        model = IllumeModel(cfg, cfg.text_vocab_size)
    assert model.gen_head_rows().device.type == "meta"
    llm = count_parameters(model.llm)
    # Vicuna-7B's 6.74B plus 2 x 16384 x 4096 rows for the image codes
    assert llm == _llm_params(cfg, 32000 + 16384) == 6_872_633_344
    assert 7.0e9 < count_parameters(model) < 7.5e9  # + a ViT-L-sized encoder and the adapter


def test_pretrained_weights_load_through_from_pretrained(tmp_path):
    tok = text_tokenizer()
    cfg = get_preset(
        "tiny-256", hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64
    )
    torch.manual_seed(1)
    base = LlamaForCausalLM(
        LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2)
    )  # fmt: skip
    base.save_pretrained(tmp_path / "llm")
    model = IllumeModel(cfg.model_copy(update={"pretrained_path": str(tmp_path / "llm")}), tok.vocab_size)
    emb = model.llm.get_input_embeddings().weight
    assert emb.shape == (tok.vocab_size + cfg.codebook_size, 32)
    torch.testing.assert_close(emb[: tok.vocab_size], base.get_input_embeddings().weight)
    torch.testing.assert_close(
        model.llm.model.layers[1].mlp.up_proj.weight, base.model.layers[1].mlp.up_proj.weight
    )
    wrong = cfg.model_copy(update={"pretrained_path": str(tmp_path / "llm"), "hidden_size": 64})
    with pytest.raises(ValueError, match="hidden_size x layers"):
        IllumeModel(wrong, tok.vocab_size)


def test_prepare_inputs_embeds_fills_image_placeholders_in_order():
    model, proc = micro_model()
    a, b = scene_image(1), scene_image(2)
    batch = proc.collate([proc.caption(a, "x"), proc.vqa(b, "how many?", "two")])
    with torch.no_grad():
        embeds = model.prepare_inputs_embeds(batch.input_ids, batch.pixel_values, batch.image_mask)
        feats = model.aligner(model.vision_model(torch.stack([a, b])))  # (2, N, D)
        plain = model.llm.get_input_embeddings()(batch.input_ids)
    torch.testing.assert_close(embeds[0][batch.image_mask[0]], feats[0])
    torch.testing.assert_close(embeds[1][batch.image_mask[1]], feats[1])
    torch.testing.assert_close(embeds[~batch.image_mask], plain[~batch.image_mask])
    with pytest.raises(ValueError, match="placeholders"):
        model.prepare_inputs_embeds(batch.input_ids, batch.pixel_values[:1], batch.image_mask)


def test_stage1_trains_only_adapter_and_image_rows():
    model, proc = micro_model()
    groups = model.param_groups(1, get_recipe("stage1", "tiny").lrs)
    assert [g["name"] for g in groups] == ["adapter", "image_embed_head"]
    opt = torch.optim.AdamW(groups, weight_decay=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = proc.collate(
        [proc.reconstruction(scene_image(3), torch.arange(16)), proc.caption(scene_image(4), "two")]
    )
    model.train()
    model(batch).loss.backward()
    opt.step()
    text = model.text_vocab_size
    after = dict(model.named_parameters())
    for name in ("llm.model.embed_tokens.weight", "llm.lm_head.weight"):
        assert torch.equal(after[name][:text], before[name][:text]), f"{name}: text rows moved"
        assert not torch.equal(after[name][text:], before[name][text:]), f"{name}: image rows did not learn"
    assert not torch.equal(after["aligner.fc1.weight"], before["aligner.fc1.weight"])
    assert torch.equal(
        after["llm.model.layers.0.mlp.up_proj.weight"], before["llm.model.layers.0.mlp.up_proj.weight"]
    )
    assert not any(p.requires_grad for p in model.vision_model.parameters())


def test_stage3_groups_cover_each_parameter_once():
    model, _ = micro_model()
    groups = model.param_groups(3, {"adapter": 1.0, "llm": 1.0, "image_embed_head": 1.0, "vision": 1.0})
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="unknown parameter groups"):
        model.param_groups(2, {"decoder": 1.0})


def test_micro_model_overfits_a_tiny_batch():
    model, proc = micro_model(seed=3)
    codes = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(0))
    batch = proc.collate(
        [
            proc.caption(scene_image(5), "a photo of two red circles"),
            proc.text_to_image("a blue square", codes),
        ]
    )
    opt = torch.optim.AdamW(model.param_groups(2, {"adapter": 5e-3, "llm": 5e-3}), weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(60):
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 3.0
    assert losses[-1] < 0.05, losses[-5:]
