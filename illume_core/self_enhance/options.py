"""What a round can choose, without the modules that use it: the reformat strategies and the
likelihood assessor's margins.

`RoundConfig` (illume_core/settings.py) validates a round's knobs against these when a command
starts; keeping them here, apart from `reformat` and `likelihood` (which import torch), lets the
command line refuse a bad option in a fraction of a second, before any work.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from illume_core.world.rules import DIMENSIONS

STRATEGIES = ("assessment", "accepted_t2i", "balanced_t2i", "preference")
SFT_STRATEGIES = ("assessment", "accepted_t2i", "balanced_t2i")  # the ones fine-tuning trains on


def check_strategies(strategies: Iterable[str]) -> list[str]:
    s = list(dict.fromkeys(strategies))
    bad = [x for x in s if x not in STRATEGIES]
    if bad or not s:
        raise ValueError(
            f"unknown or empty reformat strategies {bad or s}; choose from {', '.join(STRATEGIES)}"
        )
    if {"accepted_t2i", "balanced_t2i"} <= set(s):
        raise ValueError("accepted_t2i and balanced_t2i make the same pairs; choose one of them")
    return s


class LikelihoodMargins(BaseModel):
    """Per dimension, how much better (nats) a counterfactual must explain the codes to say "no"
    (negative: "no" unless the prompt explains them better than every counterfactual by that much)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # chosen on tuning prompts (benchmarks/likelihood_assessment.py): the margin of each dimension
    # with the best balanced accuracy on run 8's seed-0 base model (reading order; docs/BASE_MODEL.md
    # section 17). Run 5's model chose object -1, count -6, color -4, spatial -1 (section 10); with
    # reading order the object a drawing starts with also tells its relation, and spatial wants -8
    object: float = -2.0
    count: float = -8.0
    color: float = -6.0
    spatial: float = -8.0

    @classmethod
    def parse(cls, text: str) -> LikelihoodMargins:
        """'object=0,count=-3' -> margins (dimensions not named keep their defaults); a ValueError
        names the dimensions and the format."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, eq, value = part.partition("=")
            name = name.strip()
            if not eq or name not in DIMENSIONS:
                raise ValueError(
                    f"likelihood margin {part!r}: expected DIMENSION=NATS with DIMENSION one of "
                    f"{', '.join(DIMENSIONS)}, e.g. 'object=0,count=-3'"
                )
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"likelihood margin {part!r}: {value.strip()!r} is not a number") from None
        return cls(**values)
