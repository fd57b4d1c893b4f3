"""Pipeline settings: the preset, the base corpus, and the step budgets of every stage.

A train pipeline stores its settings in the lake (`<lake>/pipeline.json`, written and read by
`storage.registry`; `tasks.plumbing.load_settings` joins the two), and every later round reads
them back, so rounds fine-tune on the very corpus the base model was trained on.
Budgets are named (`smoke` for tests, `demo` for the README's one command, `experiment` for the
self-enhancement experiment); the CLI and flows read this registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from illume_core.model.config import PRESETS, IllumeConfig, get_preset
from illume_core.world.geneval import TAGS

# the tags whose text-to-image scenes may hold distractors (CorpusSpec.distractors): every tag but
# counting since 2026-12-07
DISTRACTOR_TAGS: tuple[str, ...] = tuple(t for t in TAGS if t != "counting")


# the run's specs that the data and the stages read; here, not beside the code that uses them, so
# that reading the settings (every flow does) does not import torch
@dataclass(frozen=True)
class CorpusSpec:
    """Size and seed of the base corpus (stated in every result, equal for every arm)."""

    seed: int = 0
    n_t2i: int = 12000  # text-to-image pairs (prompt + a correct scene)
    n_scenes: int = 6000  # free scenes for captions, VQA, editing and reconstruction
    n_assess: int = 4000  # scene-labelled assessment examples (prompt, image, verdicts)
    holdout: tuple[str, ...] | None = None  # held-out compositions (Holdout.parse specs); None: default
    # text-to-image pairs per GenEval tag, relative (TAGS order); None: the same number per tag
    t2i_tag_weights: tuple[float, ...] | None = None
    # text-to-image scenes of prompts that name two objects start them, read row by row on the
    # generation grid, in the order the prompt names them (prompts.in_reading_order): the drawer
    # then knows which object its first object cell begins, instead of pairing colours and shapes
    # nearly at chance (docs/BASE_MODEL.md, section 16)
    reading_order: bool = True
    # the tags whose text-to-image scenes sometimes hold 1-2 objects of shapes the prompt does not
    # name; the other tags' scenes hold exactly the objects their prompt names. Counting scenes
    # hold none since 2026-12-07: with them the model learned to draw more objects than it was
    # asked for (docs/BASE_MODEL.md, section 17)
    distractors: tuple[str, ...] = DISTRACTOR_TAGS

    def __post_init__(self) -> None:
        given = self.distractors
        if isinstance(given, (str, bool)) or any(t not in TAGS for t in given):
            raise ValueError(f"distractors lists tags out of {TAGS}, got {given!r}")
        # one spelling per set of tags (TAGS order, a tuple), so equal specs hash and digest alike
        object.__setattr__(self, "distractors", tuple(t for t in TAGS if t in given))

    def t2i_per_tag(self) -> dict[str, int]:
        """How many text-to-image pairs each tag gets (they add up to n_t2i)."""
        w = self.t2i_tag_weights or (1.0,) * len(TAGS)
        if len(w) != len(TAGS) or any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"t2i_tag_weights needs {len(TAGS)} weights >= 0 (tags {TAGS}), got {w}")
        exact = [self.n_t2i * x / sum(w) for x in w]
        counts = [int(e) for e in exact]
        for i in sorted(range(len(w)), key=lambda i: counts[i] - exact[i])[: self.n_t2i - sum(counts)]:
            counts[i] += 1  # largest remainders first
        return dict(zip(TAGS, counts, strict=True))


@dataclass(frozen=True)
class VisionBudget:
    """Steps of the two vision pretraining runs (encoder contrastive, tokenizer).

    No defaults: a run's budget (illume_core/settings.py::BUDGETS) is the one place they are set.
    """

    encoder_steps: int
    tokenizer_steps: int  # semantic: optimizer steps; pattern: k-means iterations
    batch_size: int
    tokenizer_scenes: int  # renders whose cells the pattern tokenizer is fitted to


# Budget fields that size the sampling calibration after base training, not the model itself
CALIBRATION_FIELDS = frozenset({"calibration_per_tag", "calibration_images"})


class Budget(BaseModel):
    """Steps and batch sizes of one full run (vision, stages 0-3, a round's fine-tuning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder_steps: int = Field(ge=1)
    tokenizer_steps: int = Field(ge=1)
    vision_batch: int = Field(64, ge=2)
    tokenizer_scenes: int = Field(20000, ge=1)  # renders the pattern tokenizer is fitted to
    stage_steps: dict[str, int]  # recipe name -> optimizer steps
    batch_size: int = Field(32, ge=1)
    finetune_steps: int = Field(ge=1)  # a round's stage-3 fine-tuning
    n_t2i: int = Field(ge=1)
    n_scenes: int = Field(ge=1)
    n_assess: int = Field(ge=1)
    n_text: int = Field(20000, ge=100)  # strings the text tokenizer is trained on
    eval_per_tag: int = Field(20, ge=1)  # ShapesEval prompts per tag
    eval_images_per_prompt: int = Field(4, ge=1)
    vqa_questions: int = Field(200, ge=1)
    edit_tasks: int = Field(100, ge=1)  # held-out editing tasks judged against their target scenes
    # tuning prompts per tag, and images per prompt, that each candidate sampling setting draws
    # after base training (illume_core/eval/calibration.py); 0 prompts: keep the default setting
    calibration_per_tag: int = Field(10, ge=0)
    calibration_images: int = Field(2, ge=1)


BUDGETS: dict[str, Budget] = {
    # seconds: the test suite's whole pipeline
    "smoke": Budget(
        encoder_steps=2,
        tokenizer_steps=2,
        vision_batch=8,
        stage_steps={"stage0": 2, "stage1": 2, "stage2": 2, "stage3": 2},
        batch_size=4,
        finetune_steps=2,
        n_t2i=60,
        n_scenes=30,
        n_assess=30,
        n_text=500,
        tokenizer_scenes=40,
        eval_per_tag=1,
        eval_images_per_prompt=1,
        vqa_questions=4,
        edit_tasks=4,
        calibration_per_tag=1,
        calibration_images=1,
    ),
    # the README's `illume demo`: everything in about 20 minutes on 2 CPU cores with bf16 units.
    # The understanding encoder gets 40 contrastive steps (200 before): ShapesEval is drawn through
    # the pattern tokenizer, which does not depend on it, and the 3.8 minutes saved pay for 200
    # more stage-2 steps (800 -> 1,000). On an fp32-only CPU (2026-12-08) the base model went from
    # 0.388 to 0.433 and the whole demo took 23 min 7 s; docs/BASE_MODEL.md, section 21
    "demo": Budget(
        encoder_steps=40,
        tokenizer_steps=4,
        tokenizer_scenes=12000,
        vision_batch=64,
        stage_steps={"stage0": 60, "stage1": 60, "stage2": 1000, "stage3": 100},
        batch_size=32,
        finetune_steps=40,
        n_t2i=30000,
        n_scenes=6000,
        n_assess=4000,
        eval_per_tag=10,
        eval_images_per_prompt=4,
        vqa_questions=150,
        edit_tasks=50,
    ),
    # the self-enhancement experiment (benchmarks/self_enhancement.py)
    "experiment": Budget(
        # the tiny preset (64 image tokens) on the 2-core machine: vision (encoder 500 steps,
        # pattern masks fitted in 6 k-means rounds, about 10 min, shared by an experiment's seeds
        # with `--vision-from`), then the LLM stages, most of them text-to-image in stage 2; 2,300
        # stage-2 steps spend the time bf16 autocast saved (2,000 before), with Muon on the LLM's
        # hidden matrices since run 7 (docs/BASE_MODEL.md has the measured times and scores)
        encoder_steps=500,
        tokenizer_steps=6,
        vision_batch=64,
        stage_steps={"stage0": 100, "stage1": 100, "stage2": 2300, "stage3": 200},
        batch_size=32,
        finetune_steps=60,
        n_t2i=40000,
        n_scenes=6000,
        n_assess=4000,
        eval_per_tag=20,
        eval_images_per_prompt=4,
        vqa_questions=200,
    ),
}


class PipelineSettings(BaseModel):
    """Everything that defines a base model and the data its rounds build on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = "tiny"
    budget: str = "demo"
    seed: int = 0
    holdout: tuple[str, ...] | None = None  # None: Holdout.default()
    # two-object text-to-image scenes in reading order (CorpusSpec.reading_order). A lake whose
    # pipeline.json predates the field was trained without it, and loads as False (`from_stored`)
    reading_order: bool = True
    # the tags whose text-to-image scenes may hold distractors (CorpusSpec.distractors). A lake whose
    # pipeline.json predates the field gave them to every tag, and loads so (`from_stored`)
    distractors: tuple[str, ...] = DISTRACTOR_TAGS

    @field_validator("distractors", mode="before")
    @classmethod
    def _known_tags(cls, v):
        return CorpusSpec(distractors=v).distractors  # refuses an unknown tag; one order (TAGS')

    def model_post_init(self, _ctx) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")
        if self.budget not in BUDGETS:
            raise ValueError(f"unknown budget {self.budget!r}; choose one of: {', '.join(BUDGETS)}")

    @property
    def cfg(self) -> IllumeConfig:
        return get_preset(self.preset)

    @property
    def b(self) -> Budget:
        return BUDGETS[self.budget]

    @property
    def corpus(self) -> CorpusSpec:
        b = self.b
        spec = CorpusSpec(self.seed, b.n_t2i, b.n_scenes, b.n_assess, holdout=self.holdout)
        return dataclasses.replace(spec, reading_order=self.reading_order, distractors=self.distractors)

    @property
    def vision(self) -> VisionBudget:
        b = self.b
        return VisionBudget(b.encoder_steps, b.tokenizer_steps, b.vision_batch, b.tokenizer_scenes)

    def digest(self) -> str:
        """A short digest of what defines the base model: these settings and what their names stand for.

        The budget's step counts, the preset's shapes and the stage recipes at the preset's
        learning rates are in it, not only their names, so a changed budget or recipe changes the
        digest. It is recorded in every Parquet file's metadata and stands for `settings` in
        the training tasks' cache keys (tasks/steps.py): a lake trained under an older recipe
        retrains instead of reusing its cached stages.
        """
        from illume_core.train.recipes import RECIPES, get_recipe

        blob = {
            "settings": self.model_dump(mode="json"),
            # how the sampling setting is chosen after training does not define the model: a lake
            # trained before the calibration fields existed keeps its digest and its cached stages
            "budget": self.b.model_dump(mode="json", exclude=CALIBRATION_FIELDS),
            "config": self.cfg.model_dump(mode="json"),
            "recipes": {n: get_recipe(n, self.preset).model_dump(mode="json") for n in RECIPES},
            "corpus": dataclasses.asdict(self.corpus),
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]

    def to_stored(self) -> str:
        """The document a lake keeps (`storage.registry.save_settings`)."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_stored(cls, text: str) -> PipelineSettings:
        """Settings from a lake's stored document (`storage.registry.read_settings`); fields added
        since a lake was trained take the value that lake was trained with, not today's default."""
        stored = json.loads(text)
        stored.setdefault("reading_order", False)  # written before the field: trained without it
        stored.setdefault("distractors", list(TAGS))  # likewise: distractors in every tag's scenes
        return cls(**stored)


# who assesses a round's samples: the model answering the assessment question about the image
# (`self`, ILLUME's way), the model's own likelihood of its drawing under the prompt against
# one-dimension counterfactuals (`likelihood`, illume_core/self_enhance/likelihood.py), or the judge as an
# external teacher (`judge`, the ceiling of a perfect assessor)
Assessor = Literal["self", "likelihood", "judge"]
ASSESSORS: tuple[str, ...] = get_args(Assessor)

# where a round's prompts come from: the base corpus's own text-to-image prompts (`corpus`, ILLUME's
# "a subset of its own text-to-image prompts"), or compositions the base corpus holds out (`novel`:
# the holdout's prompts, never a ShapesEval prompt; illume_core/self_enhance/policy.py), where the
# model has no ground truth and only its own drawings and judgments can teach it
PromptSource = Literal["corpus", "novel"]
PROMPT_SOURCES: tuple[str, ...] = get_args(PromptSource)


# a round fine-tunes a converged base model at a quarter of stage 3's learning rate: at stage 3's
# own rate (2e-4 for the tiny LLM, restarted with a fresh optimizer) the control arm's 60 steps on
# base data alone cost 0.075 of ShapesEval on run 9's seed-0 base (0.683 -> 0.608); at a quarter
# they cost nothing (0.685), and every round arm ended 0.02-0.08 higher than at the full rate
# (docs/RESULTS.md, benchmarks/self_enhancement.py --finetune-lr-scale)
FINETUNE_LR_SCALE = 0.25


class RoundConfig(BaseModel):
    """A self-enhancement round's knobs: what it draws, who assesses, what it trains on, and when its
    candidate is promoted. The flow, the CLI and `illume rerun` share it; the round's row in the
    `rounds` table stores it (`params`, with the round number), so a re-run repeats the round.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_prompts: int = Field(48, ge=1)  # drawn tag-balanced from `prompts`' source
    prompts: PromptSource = "corpus"  # see PROMPT_SOURCES above
    images_per_prompt: int = Field(4, ge=1)
    strategies: tuple[str, ...] = ("assessment", "accepted_t2i")  # illume_core/self_enhance/reformat.py
    assessor: Assessor = "self"  # see ASSESSORS above
    # the likelihood assessor's margins (nats per dimension, illume_core/self_enhance/likelihood.py); dimensions
    # not given keep `LikelihoodMargins`' defaults, which maximize balanced accuracy
    likelihood_margins: dict[str, float] = Field(default_factory=dict)
    margin: float = Field(0.02, ge=0.0)  # largest ShapesEval drop still promoted
    min_parse_rate: float = Field(0.5, ge=0.0, le=1.0)  # smallest assessment parse rate promoted
    finetune_steps: int | None = Field(None, ge=1)  # None: the budget's
    # the round's fine-tuning lr as a multiple of the stage-3 recipe's (FINETUNE_LR_SCALE)
    finetune_lr_scale: float = Field(FINETUNE_LR_SCALE, gt=0.0, le=10.0)
    seed: int = 0

    @field_validator("strategies", mode="before")
    @classmethod
    def _known_strategies(cls, v):
        from illume_core.self_enhance.options import check_strategies

        return tuple(check_strategies([v] if isinstance(v, str) else v))

    @field_validator("likelihood_margins", mode="before")
    @classmethod
    def _known_margins(cls, v):
        from illume_core.self_enhance.options import LikelihoodMargins

        if isinstance(v, str):  # the CLI's 'object=0,count=-3'
            v = LikelihoodMargins.parse(v).model_dump(exclude_defaults=True)
        LikelihoodMargins(**(v or {}))  # refuses an unknown dimension, names the known ones
        return v or {}

    def params_json(self, round: int) -> str:
        """The round's `params` column: these knobs and the round number, as sorted JSON."""
        return json.dumps({"round": round, **self.model_dump(mode="json")}, sort_keys=True, default=str)

    @classmethod
    def from_params(cls, params: str) -> RoundConfig:
        """The knobs a round's `params` column recorded (keys an older version wrote are skipped)."""
        stored = json.loads(params)
        stored.setdefault("finetune_lr_scale", 1.0)  # recorded before the field: stage 3's own lr
        return cls(**{k: v for k, v in stored.items() if k in cls.model_fields})
