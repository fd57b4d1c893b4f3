"""benchmarks/sampling_sweep.py: its settings parse as documented, bad ones fail with the format."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sweep():
    spec = importlib.util.spec_from_file_location("sampling_sweep", ROOT / "benchmarks" / "sampling_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_settings_parse_as_documented():
    from illume_core.model.sampling import SamplingParams as P

    parse = _sweep().parse_setting
    assert parse("2:1:0") == P(cfg_scale=2.0, temperature=1.0, top_k=None, top_p=1.0)  # top_k 0: no cut
    assert parse("4:0.7:20") == P(cfg_scale=4.0, temperature=0.7, top_k=20)
    assert parse("2:0:0") == P(cfg_scale=2.0, temperature=0.0)  # temperature 0: greedy
    assert parse("3:1:0:0.8") == P(cfg_scale=3.0, top_p=0.8)
    assert parse("2:1:0:0.7:m") == P(cfg_scale=2.0, top_p=0.7, nucleus="mask")


@pytest.mark.parametrize(
    "bad", ["2:1", "2:1:0:5", "2:1:0:0", "2:1:0:0.8:1", "2:1:0:0.8:x", "2:-1:0", "x:1:0", "2:1:-3"]
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match=r"setting '.*': (expected|cfg)"):
        _sweep().parse_setting(bad)


def test_tuning_prompts_are_not_shapeseval_prompts():
    from illume_core.eval.evaluations import SHAPESEVAL_SEED

    assert _sweep().PROMPT_SEED != SHAPESEVAL_SEED
