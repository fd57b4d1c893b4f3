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
    parse = _sweep().parse_setting
    assert parse("2:1:0") == (2.0, 1.0, None, 1.0)  # top_k 0 means no cut, top_p 1 none
    assert parse("4:0.7:20") == (4.0, 0.7, 20, 1.0)
    assert parse("2:0:0") == (2.0, 0.0, None, 1.0)  # temperature 0: greedy
    assert parse("3:1:0:0.8") == (3.0, 1.0, None, 0.8)


@pytest.mark.parametrize("bad", ["2:1", "2:1:0:5", "2:1:0:0", "2:1:0:0.8:1", "2:-1:0", "x:1:0", "2:1:-3"])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match=r"setting '.*': (expected|cfg)"):
        _sweep().parse_setting(bad)


def test_tuning_prompts_are_not_shapeseval_prompts():
    from illume_core.eval.evaluations import SHAPESEVAL_SEED

    assert _sweep().PROMPT_SEED != SHAPESEVAL_SEED
