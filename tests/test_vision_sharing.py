"""`illume train --vision-from`: the seeds of one experiment share one trained encoder and tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from illume_core.model.checkpoint import load_checkpoint, read_manifest
from illume_core.model.config import get_preset
from illume_core.settings import PipelineSettings
from illume_core.train.stages import shared_vision
from storage import registry


def test_a_shared_vision_run_keeps_the_encoder_and_tokenizer_and_makes_its_own_llm(smoke_lake, tmp_path):
    from tasks import steps

    source = registry.vision_checkpoint(str(smoke_lake))
    assert read_manifest(source)["stage"] == "vision"
    lake = tmp_path / "seed1"
    s = PipelineSettings(budget="smoke", seed=1)
    ref = steps.train_vision.fn(str(lake), s, vision_from=source)
    made = registry.lake_path(str(lake), ref)

    src, new = load_checkpoint(source), load_checkpoint(made)
    for (k, a), (k2, b) in zip(
        src.semantic_tokenizer.state_dict().items(), new.semantic_tokenizer.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b), k
    for k, v in new.model.vision_model.state_dict().items():
        assert torch.equal(v, src.semantic_tokenizer.encoder.state_dict()[k]), k
    # the LLM is this run's own (seed 1), not a copy of the source's (seed 0)
    body = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(new.model.llm.state_dict()[body], src.model.llm.state_dict()[body])
    assert new.manifest["extra"]["vision_from"] == src.manifest["id"]
    rows = registry.get_lake(str(lake)).read("checkpoints").to_pylist()
    assert [(r["stage"], r["checkpoint_id"]) for r in rows] == [("vision", new.manifest["id"])]
    # the folder form names the same checkpoint as the lake form
    assert registry.vision_checkpoint(source) == source
    # trained again without the flag, the lake keeps its shared vision; a lake that trained its own has none
    assert registry.shared_vision_of(str(lake)) == str(Path(made).resolve())
    assert registry.shared_vision_of(str(smoke_lake)) is None


def test_vision_of_another_preset_is_refused(smoke_lake):
    source = registry.vision_checkpoint(str(smoke_lake))
    with pytest.raises(ValueError, match="differs from this run's"):
        shared_vision(get_preset("tiny-256"), source)


def test_vision_is_shared_across_adapter_and_llm_shapes_but_not_grids(smoke_lake):
    source = registry.vision_checkpoint(str(smoke_lake))
    # the adapter and the LLM are built by the run itself: they may differ
    tok, _ = shared_vision(get_preset("tiny", adapter_pool=4, num_layers=2, hidden_size=128), source)
    assert tok.masks.shape[0] == get_preset("tiny").code_masks
    with pytest.raises(ValueError, match=r"in \['gen_patch_size'\]"):
        shared_vision(get_preset("tiny", gen_patch_size=16), source)


def test_a_path_that_is_neither_checkpoint_nor_lake_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder"):
        registry.vision_checkpoint(str(tmp_path / "nowhere"))
    (tmp_path / "lake" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no vision checkpoint"):
        registry.vision_checkpoint(str(tmp_path / "lake"))
