import pytest

from illume_core.model.config import PRESETS, IllumeConfig, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_consistent(name):
    c = get_preset(name)
    assert c.name == name
    assert c.grid * c.patch_size == c.image_size
    assert c.max_seq_len >= c.image_tokens + 32


def test_shapes_of_named_presets():
    assert get_preset("illume-7b").codebook_size == 16384
    assert get_preset("illume-7b").image_tokens == 256
    assert get_preset("small").image_tokens == 256
    tiny = get_preset("tiny")
    # the LLM draws 8x8 cells of 8 px and reads 16x16 encoder cells merged 2x2 by the adapter
    assert tiny.image_tokens == 64 and tiny.encoder_cells == 256 and tiny.understanding_tokens == 64
    assert tiny.tokenizer == "pattern" and tiny.code_masks == 1638
    old = get_preset("tiny-256")
    assert old.image_tokens == 256 and old.tokenizer == "semantic" and old.codebook_size == 2048
    assert get_preset("small").understanding_tokens == 256


def test_unknown_preset_names_choices():
    with pytest.raises(ValueError, match="choose one of: tiny, tiny-256, small, illume-7b"):
        get_preset("huge")


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        IllumeConfig(image_size=60, patch_size=8)
    with pytest.raises(ValueError):
        IllumeConfig(image_size=-64)
    with pytest.raises(ValueError):
        get_preset("tiny", codebook_size=0)
    with pytest.raises(ValueError, match="masks x 10 colours"):
        get_preset("tiny", codebook_size=2048)
    with pytest.raises(ValueError, match="multiple of gen_patch_size"):
        get_preset("tiny", gen_patch_size=6)


def test_round_config_is_one_validated_object_that_its_stored_params_give_back():
    import json

    from pydantic import ValidationError

    from illume_core.settings import RoundConfig

    cfg = RoundConfig(n_prompts=12, strategies=["assessment", "preference", "assessment"], assessor="judge")
    assert cfg.strategies == ("assessment", "preference")  # in order, once each
    stored = cfg.params_json(round=3)
    assert json.loads(stored)["round"] == 3 and RoundConfig.from_params(stored) == cfg
    # what rounds recorded before the object existed reads back (extra keys skipped)
    old = json.dumps({"round": 1, "n_prompts": 8, "strategies": ["assessment"], "workers": 2})
    assert RoundConfig.from_params(old) == RoundConfig(
        n_prompts=8, strategies=["assessment"], finetune_lr_scale=1.0
    )
    assert RoundConfig.from_params(old).prompts == "corpus"  # recorded before the field: the corpus
    novel = RoundConfig(prompts="novel")
    assert RoundConfig.from_params(novel.params_json(round=2)).prompts == "novel"
    # the likelihood assessor's margins: the CLI's text or a dict, dimensions checked by name
    lenient = RoundConfig(assessor="likelihood", likelihood_margins="object=0, count=-3")
    assert lenient.likelihood_margins == {"object": 0.0, "count": -3.0}
    assert RoundConfig.from_params(lenient.params_json(round=1)) == lenient
    for bad in (
        {"assessor": "human"},
        {"strategies": ["guess"]},
        {"strategies": []},
        {"n_prompts": 0},
        {"likelihood_margins": {"shape": 1.0}},
        {"likelihood_margins": "object=none"},
        {"prompts": "heldout"},
    ):
        with pytest.raises(ValidationError):
            RoundConfig(**bad)


def test_a_bad_round_knob_is_refused_before_any_work(tmp_path, monkeypatch):
    """`illume round` builds its RoundConfig first: a bad option is a usage error naming it, before
    Ray or the Prefect API start; the flow validates `config` the same way (a deployment's mapping)."""
    from prefect.exceptions import ParameterTypeError
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.pipeline import self_enhancement_round
    from illume_core.settings import RoundConfig

    monkeypatch.setattr("flows.commands_pipeline.warm_up", lambda: pytest.fail("work started"))
    runner = CliRunner(env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    lake = str(tmp_path / "lake")
    for args, option in (
        (["--assessor", "human"], "--assessor"),
        (["--strategy", "guess"], "--strategy"),
        (["--n-prompts", "0"], "--n-prompts"),
        (["--min-parse-rate", "2"], "--min-parse-rate"),
        (["--likelihood-margins", "shape=1"], "--likelihood-margins"),
        (["--prompts", "heldout"], "--prompts"),
    ):
        out = runner.invoke(app, ["round", "--lake", lake, *args])
        assert out.exit_code == 2 and f"Invalid value for {option}" in out.output, out.output
    assert not (tmp_path / "lake").exists()
    params = self_enhancement_round.validate_parameters({"config": {"n_prompts": 8, "assessor": "judge"}})
    assert params["config"] == RoundConfig(n_prompts=8, assessor="judge")
    assert self_enhancement_round.validate_parameters({})["config"] is None  # the flow: RoundConfig()
    with pytest.raises(ParameterTypeError, match="config.assessor"):
        self_enhancement_round.validate_parameters({"config": {"assessor": "human"}})


def _without_field(tmp_path, field: str):
    """Today's default settings saved, then loaded from a pipeline.json written before `field`."""
    import json

    from illume_core.settings import PipelineSettings
    from storage.registry import read_settings, save_settings
    from tasks.plumbing import load_settings

    s = PipelineSettings(budget="smoke")
    save_settings(str(tmp_path), s.to_stored())
    assert load_settings(str(tmp_path)) == s
    assert json.loads((tmp_path / "pipeline.json").read_text()) == json.loads(read_settings(str(tmp_path)))
    old = json.loads((tmp_path / "pipeline.json").read_text())
    del old[field]
    (tmp_path / "pipeline.json").write_text(json.dumps(old))
    loaded = load_settings(str(tmp_path))
    assert loaded.digest() != s.digest()  # the corpus is part of what the digest stands for
    return s, loaded


def test_reading_order_is_the_default_and_older_lakes_load_without_it(tmp_path):
    s, loaded = _without_field(tmp_path, "reading_order")
    assert s.reading_order and s.corpus.reading_order
    # that lake's corpus had no reading order
    assert not loaded.reading_order and not loaded.corpus.reading_order


def test_counting_scenes_lose_their_distractors_and_older_lakes_keep_them(tmp_path):
    from illume_core.settings import PipelineSettings
    from illume_core.world.geneval import TAGS

    s, loaded = _without_field(tmp_path, "distractors")
    assert set(s.corpus.distractors) == set(TAGS) - {"counting"}
    assert loaded.corpus.distractors == TAGS  # that lake's corpus gave every tag distractors
    with pytest.raises(ValueError, match="distractors lists tags"):
        PipelineSettings(budget="smoke", distractors=("counting", "nonsense"))


def test_a_round_fine_tunes_at_a_quarter_of_stage_3s_lr_and_older_rounds_rerun_at_their_own():
    import json

    from pydantic import ValidationError

    from illume_core.settings import FINETUNE_LR_SCALE, RoundConfig

    assert RoundConfig().finetune_lr_scale == FINETUNE_LR_SCALE == 0.25
    cfg = RoundConfig(finetune_lr_scale=0.5)
    assert RoundConfig.from_params(cfg.params_json(3)) == cfg  # what a round stored comes back
    older = json.loads(RoundConfig().params_json(2))
    del older["finetune_lr_scale"]  # a round recorded before the knob fine-tuned at stage 3's lr
    assert RoundConfig.from_params(json.dumps(older)).finetune_lr_scale == 1.0
    with pytest.raises(ValidationError):
        RoundConfig(finetune_lr_scale=0)
