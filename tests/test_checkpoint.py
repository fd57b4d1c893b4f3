"""Checkpoints: round trip gives identical outputs; tampered or missing files are refused."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from model_helpers import micro_model, scene_image, text_tokenizer
from safetensors import safe_open

from illume_core.model.checkpoint import (
    CheckpointIntegrityError,
    CheckpointMissingFileError,
    load_checkpoint,
    load_optimizer_state,
    read_manifest,
    save_checkpoint,
)
from illume_core.model.sampling import generate_images
from illume_core.model.vision_tokenizer import SemanticTokenizer
from illume_core.train.recipes import get_recipe

torch.set_num_threads(1)


@pytest.fixture()
def saved(tmp_path):
    model, proc = micro_model()
    semantic = SemanticTokenizer(proc.cfg)
    opt = torch.optim.AdamW(model.param_groups(1, get_recipe("stage1", "tiny").lrs))
    batch = proc.collate([proc.reconstruction(scene_image(0), torch.arange(16))])
    model(batch).loss.backward()
    opt.step()
    info = save_checkpoint(
        tmp_path / "ck", model, semantic, text_tokenizer(), stage=1, parent="abc", optimizer=opt
    )
    return info, model, semantic, proc, opt


def test_round_trip_gives_identical_outputs(saved):
    info, model, semantic, proc, opt = saved
    loaded = load_checkpoint(info.path)
    assert loaded.manifest["id"] == info.id and loaded.manifest["parent"] == "abc"
    assert loaded.config == proc.cfg
    assert loaded.text_tokenizer.to_str() == proc.tokenizer.to_str()
    batch = proc.collate([proc.caption(scene_image(1), "two red circles")])
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.model(batch).logits, model(batch).logits)
        pixels = scene_image(2)[None]
        assert torch.equal(loaded.semantic_tokenizer.encode(pixels), semantic.encode(pixels))
    assert torch.equal(
        generate_images(loaded.model, proc, ["two red circles"], [3]),
        generate_images(model, proc, ["two red circles"], [3]),
    )
    state = load_optimizer_state(info.path)
    ref = opt.state_dict()
    assert state["param_groups"] == json.loads(json.dumps(ref["param_groups"]))
    for pid, values in ref["state"].items():
        for key, value in values.items():
            assert torch.equal(state["state"][pid][key], value)
    opt.load_state_dict(state)


def test_checkpoint_id_is_content_derived(saved, tmp_path):
    info, model, semantic, proc, _ = saved
    again = save_checkpoint(tmp_path / "ck2", model, semantic, text_tokenizer(), stage=1, parent="abc")
    assert again.id != info.id  # no optimizer file: different content
    manifest = read_manifest(info.path)
    assert set(manifest["files"]) >= {
        "model.safetensors",
        "tokenizer.safetensors",
        "tokenizer.json",
        "config.json",
    }
    with pytest.raises(FileExistsError):
        save_checkpoint(info.path, model, semantic, text_tokenizer(), stage=1)


def test_tampered_file_is_refused_naming_it(saved):
    info = saved[0]
    path = info.path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError, match="model.safetensors"):
        load_checkpoint(info.path)


def test_missing_tokenizer_is_refused(saved):
    info = saved[0]
    (info.path / "tokenizer.json").unlink()
    with pytest.raises(CheckpointMissingFileError, match="tokenizer.json"):
        load_checkpoint(info.path)


def test_no_pickle_in_checkpoint(saved):
    for f in saved[0].path.iterdir():
        assert f.suffix in (".safetensors", ".json"), f.name
        assert not zipfile.is_zipfile(f), f"{f.name} is a torch.save archive"
        if f.suffix == ".safetensors":
            with safe_open(str(f), "pt") as st:  # parses as safetensors, nothing executable inside
                assert len(list(st.keys())) > 0
        else:
            json.loads(f.read_text())


def test_cli_generate_ask_edit_on_a_checkpoint(saved, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.commands_model import NoCheckpointError, require_current_checkpoint

    info = saved[0]
    lake = tmp_path / "lake"
    with pytest.raises(NoCheckpointError, match="illume demo"):
        require_current_checkpoint(lake)
    (lake / "checkpoints").mkdir(parents=True)
    (lake / "checkpoints" / "current").write_text(str(info.path))
    assert require_current_checkpoint(lake) == info.path
    runner = CliRunner()
    out = tmp_path / "img.png"
    args = ["generate", "two red circles", "-o", str(out), "--lake", str(lake), "--seed", "3", "-n", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    first = [(tmp_path / f"img_{i}.png").read_bytes() for i in range(2)]
    assert runner.invoke(app, args).exit_code == 0
    assert [(tmp_path / f"img_{i}.png").read_bytes() for i in range(2)] == first  # same seed, same images
    res = runner.invoke(
        app, ["ask", str(tmp_path / "img_0.png"), "how many circles?", "--checkpoint", str(info.path)]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        ["edit", str(tmp_path / "img_0.png"), "remove it", "-o", str(out), "--checkpoint", str(info.path)],
    )
    assert res.exit_code == 0 and out.is_file(), res.output


def test_cli_generate_best_of_keeps_the_candidate_the_model_judges_best(saved, tmp_path):
    """`illume generate --best-of K`: image i is one of its K candidates (seeds seed + i*K + j),
    the one `pick_best` chooses; a prompt outside the world's phrasings is refused up front."""
    from typer.testing import CliRunner

    from flows.cli import app
    from illume_core.model.checkpoint import load_checkpoint
    from illume_core.model.processor import Processor
    from illume_core.model.sampling import SamplingParams, generate_images
    from illume_core.self_enhance.likelihood import metadata_for, pick_best

    info = saved[0]
    prompt = "a photo of a red circle"
    out = tmp_path / "best.png"
    args = ["generate", prompt, "-o", str(out), "--checkpoint", str(info.path), "--seed", "5", "-n", "2"]
    res = CliRunner().invoke(app, [*args, "--best-of", "3"])
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(info.path)
    proc = Processor(ck.config, ck.text_tokenizer)
    cands = generate_images(ck.model, proc, [prompt] * 6, list(range(5, 11)), SamplingParams(cfg_scale=2.0))
    groups = cands.view(2, 3, -1)
    want = [g[pick_best(ck.model, proc, metadata_for(prompt), g)] for g in groups]
    single = tmp_path / "one.png"
    for i, codes in enumerate(want):  # the same codes written by the plain path give the same file
        j = int((groups[i] == codes).all(-1).nonzero()[0])
        res = CliRunner().invoke(
            app,
            [
                "generate",
                prompt,
                "-o",
                str(single),
                "--checkpoint",
                str(info.path),
                "--seed",
                str(5 + 3 * i + j),
            ],
        )
        assert res.exit_code == 0 and (tmp_path / f"best_{i}.png").read_bytes() == single.read_bytes()
    res = CliRunner().invoke(app, [*args[:1], "two red circles", *args[2:], "--best-of", "3"])
    assert res.exit_code == 2 and "not a ShapesWorld prompt" in " ".join(res.output.split())
    assert metadata_for("a photo of  three squares").tag == "counting"


def _resign(directory) -> None:
    """Recompute the manifest's digests after a file was rewritten on purpose (an older writer)."""
    from illume_core.model.checkpoint import MANIFEST_FILE, _files_id, _sha256

    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["files"] = {name: _sha256(directory / name) for name in manifest["files"]}
    manifest["id"] = _files_id(manifest["files"])
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_checkpoint_from_before_adapter_pool_loads_with_one_position_per_cell(tmp_path):
    model, proc = micro_model()  # adapter_pool 1
    ck = tmp_path / "old"
    save_checkpoint(ck, model, SemanticTokenizer(proc.cfg), text_tokenizer(), stage=1)
    config = json.loads((ck / "config.json").read_text())
    del config["illume"]["adapter_pool"]  # what an older illume wrote
    (ck / "config.json").write_text(json.dumps(config))
    _resign(ck)
    loaded = load_checkpoint(ck)
    assert loaded.config.adapter_pool == 1
    torch.testing.assert_close(loaded.model.aligner.fc1.weight, model.aligner.fc1.weight)


def test_tokenizer_of_an_older_shape_is_refused_with_what_to_do(tmp_path):
    from illume_core.model.checkpoint import CheckpointFormatError

    model, proc = micro_model()
    old = SemanticTokenizer(proc.cfg)
    del old.decoder.code_embed  # the decoder before it had a vector per code
    ck = tmp_path / "old"
    save_checkpoint(ck, model, old, text_tokenizer(), stage=1)
    with pytest.raises(CheckpointFormatError, match=r"tokenizer\.safetensors does not fit.*illume train"):
        load_checkpoint(ck)


def test_model_whose_encoder_has_no_conv_stem_is_refused_with_what_to_do(tmp_path):
    from illume_core.model.checkpoint import CheckpointFormatError

    model, proc = micro_model()
    del model.vision_model.stem  # the encoder before its conv stem
    ck = tmp_path / "old"
    save_checkpoint(ck, model, SemanticTokenizer(proc.cfg), text_tokenizer(), stage=1)
    with pytest.raises(
        CheckpointFormatError, match=r"model\.safetensors does not fit.*conv stem.*illume train"
    ):
        load_checkpoint(ck)
