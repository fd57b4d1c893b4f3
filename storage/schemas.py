"""The lake's tables: one pydantic row model per table, its pyarrow schema derived by one function.

`TABLES` maps a table name to its `TableDef` (row model, arrow schema, schema version). Writers,
the catalog and the docs all read this registry, so a column is defined exactly once. Every row
carries its lineage (round, checkpoint, prompt, sample index) where the table has one.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

DIMENSIONS = ("object", "count", "color", "spatial")  # the four self-assessment dimensions

Verdict = Literal["yes", "no"]
Int32List = Annotated[list[int], pa.list_(pa.int32())]  # an explicit arrow type overrides the default


def sample_key(round: int, checkpoint_id: str, prompt_id: str, sample_index: int) -> str:
    """The string that names one sample everywhere (sft image refs, source_sample)."""
    return f"r{round}/{checkpoint_id}/{prompt_id}/{sample_index}"


class Row(BaseModel):
    """Base of every row model: unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class RoundRow(Row):
    round: int = Field(ge=0, description="round number; 0 is the base training run")
    base_checkpoint: str = Field(description="checkpoint id the round started from")
    candidate_checkpoint: str | None = Field(None, description="checkpoint id fine-tuned in this round")
    status: Literal["running", "promoted", "rejected"] = Field(description="outcome of the round")
    reason: str | None = Field(None, description="why the candidate was promoted or rejected")
    started_at: datetime = Field(description="UTC start time")
    ended_at: datetime | None = Field(None, description="UTC end time; null while running")
    params: str = Field("{}", description="round parameters as a JSON object")


class PromptRow(Row):
    round: int = Field(ge=0, description="round the prompt set was written for")
    prompt_id: str = Field(description="stable prompt id")
    tag: str = Field(description="GenEval tag (single_object, two_object, counting, ...)")
    prompt: str = Field(description="prompt text")
    metadata: str = Field(description="GenEval metadata line (JSON object)")
    split: Literal["train", "eval", "heldout"] = Field(description="which use the prompt is reserved for")


class SampleRow(Row):
    round: int = Field(ge=0, description="round the sample was drawn in")
    checkpoint_id: str = Field(description="checkpoint that generated the image")
    prompt_id: str = Field(description="prompt the image was generated for")
    sample_index: int = Field(ge=0, description="index of this sample among the prompt's samples")
    sample_key: str = Field(description="r<round>/<checkpoint_id>/<prompt_id>/<sample_index>")
    seed: int = Field(description="sampling seed, derived from (round, prompt_id, sample_index)")
    png: bytes = Field(description="the generated image, PNG-encoded")
    image_tokens: Int32List = Field(description="the image token ids the model emitted")


class AssessmentRow(Row):
    round: int = Field(ge=0, description="round of the assessed sample")
    checkpoint_id: str = Field(description="checkpoint that generated the assessed sample")
    prompt_id: str = Field(description="prompt of the assessed sample")
    sample_index: int = Field(ge=0, description="sample index of the assessed sample")
    # added in version 2 (null in older partitions): the one-column join key to judgments
    sample_key: str | None = Field(None, description="r<round>/<checkpoint_id>/<prompt_id>/<sample_index>")
    assessor: Literal["self", "likelihood", "judge"] = Field(
        description="who wrote the assessment: the model answering about the image (self), the model's "
        "likelihood of its drawing against counterfactual prompts (likelihood), or the judge"
    )
    object_verdict: Verdict | None = Field(None, description="are the right objects there; null if unparsed")
    object_reason: str = Field("", description="the assessor's reason for the object verdict")
    count_verdict: Verdict | None = Field(None, description="is the count right; null if unparsed")
    count_reason: str = Field("", description="reason for the count verdict")
    color_verdict: Verdict | None = Field(None, description="are the colours right; null if unparsed")
    color_reason: str = Field("", description="reason for the colour verdict")
    spatial_verdict: Verdict | None = Field(
        None, description="is the spatial relation right; null if unparsed"
    )
    spatial_reason: str = Field("", description="reason for the spatial verdict")
    raw_text: str = Field(description="the assessor's full output text")
    parse_status: Literal["ok", "partial", "failed"] = Field(description="how much of raw_text parsed")


class JudgmentRow(Row):
    round: int = Field(ge=0, description="round of the judged sample")
    checkpoint_id: str = Field(description="checkpoint that generated the judged sample")
    prompt_id: str = Field(description="prompt of the judged sample")
    sample_index: int = Field(ge=0, description="sample index of the judged sample")
    tag: str = Field(description="GenEval tag of the prompt")
    correct: bool = Field(description="GenEval-style verdict: every clause of the prompt holds")
    reason: str = Field(description="why the judge decided so")
    details: str = Field(
        "{}", description='JSON; "dimensions" maps object/count/color/spatial to a boolean truth'
    )
    # added in version 2 (null in older partitions): one join key to assessments and the judge's
    # per-dimension truths as plain columns, so the agreement view parses no JSON
    sample_key: str | None = Field(None, description="r<round>/<checkpoint_id>/<prompt_id>/<sample_index>")
    object_ok: bool | None = Field(None, description="judge's truth: the right objects are there")
    count_ok: bool | None = Field(None, description="judge's truth: the count is right")
    color_ok: bool | None = Field(None, description="judge's truth: the colours are right")
    spatial_ok: bool | None = Field(None, description="judge's truth: the spatial relation holds")


class SftExampleRow(Row):
    round: int = Field(ge=0, description="round whose fine-tuning uses this example")
    checkpoint_id: str = Field(description="checkpoint that generated the source sample")
    prompt_id: str = Field(description="prompt of the source sample")
    sample_index: int = Field(ge=0, description="sample index of the source sample")
    example_id: str = Field(description="stable id of this training example")
    conversation: str = Field(description="JSON list of turns {role, content}; images as <image:i>")
    image_refs: list[str] = Field(description="sample keys of the images the conversation refers to")
    strategy: str = Field(description="reformat strategy that produced the example")
    source_sample: str = Field(description="sample key of the sample the example was made from")


class EvaluationRow(Row):
    round: int = Field(ge=0, description="round the evaluated checkpoint belongs to")
    checkpoint_id: str = Field(description="evaluated checkpoint")
    benchmark: str = Field(description="benchmark name, e.g. shapeseval")
    split: str = Field("eval", description="prompt split evaluated")
    tag: str = Field(description="GenEval tag, or 'overall'")
    metric: str = Field(description="metric name, e.g. accuracy")
    value: float = Field(description="metric value")
    n: int = Field(ge=0, description="number of items the value is computed over")


class ExperimentArmRow(Row):
    round: int = Field(0, ge=0, description="the round every arm started from (0: the base model)")
    seed: int = Field(description="the experiment's seed (one base model per seed)")
    arm: str = Field(description="baseline, control, or the name of a round's strategies and assessor")
    metric: str = Field(
        description="a figure of the arm's evaluation: a ShapesEval tag, overall, heldout_overall, "
        "vqa_overall, edit_overall, ba_<dimension> (text answer), lba_<dimension> (likelihood), ..., "
        "or overall_minus_control"
    )
    value: float = Field(description="the figure")
    ci_low: float | None = Field(
        None, description="95% bootstrap interval over prompts, low end (overall figures)"
    )
    ci_high: float | None = Field(None, description="95% bootstrap interval over prompts, high end")
    minutes: float = Field(ge=0.0, description="wall minutes the arm took")
    finetune_lr_scale: float = Field(description="every fine-tuned arm's lr, as a multiple of stage 3's")


class SamplingTrialRow(Row):
    round: int = Field(
        ge=0, description="round of the checkpoint whose sampling was chosen (0: the base model)"
    )
    checkpoint_id: str = Field(description="the checkpoint that drew the tuning images")
    setting: str = Field(description="sampling setting, cfg:temperature:top_k[:top_p[:m]] (m: mask nucleus)")
    params: str = Field(description="the setting as SamplingParams JSON")
    tag: str = Field(description="GenEval tag, or 'overall' (the unweighted mean of the tags)")
    accuracy: float = Field(ge=0.0, le=1.0, description="the judge's accuracy on the tuning images")
    n: int = Field(ge=0, description="tuning images the accuracy is computed over")
    chosen: bool = Field(description="whether this setting became the lake's sampling setting")


class CheckpointRow(Row):
    checkpoint_id: str = Field(description="checkpoint id")
    parent: str | None = Field(None, description="checkpoint this one was trained from")
    round: int = Field(ge=0, description="round that produced the checkpoint")
    stage: str = Field(description="training stage (stage1, stage2, stage3, self_enhance)")
    uri: str = Field(
        description="where the safetensors, config and manifest live, relative to the lake root"
        " (absolute in rows written before 2026-12-03)"
    )
    manifest_digest: str = Field(description="sha256 of the checkpoint manifest")
    promoted: bool = Field(False, description="whether the checkpoint became the round's base")
    created_at: datetime = Field(description="UTC creation time")


class TaskRunRow(Row):
    task: str = Field(description="task name")
    round: int = Field(ge=0, description="round the task ran for")
    started_at: datetime = Field(description="UTC start time")
    ended_at: datetime | None = Field(None, description="UTC end time; null while running")
    rows: int = Field(0, ge=0, description="rows the task wrote")
    compute_seconds: float = Field(0.0, ge=0, description="CPU/GPU seconds the task consumed")
    status: Literal["running", "completed", "failed", "cached"] = Field(description="final state")
    flow_run_id: str | None = Field(None, description="Prefect flow run id, if any")


_SCALARS: dict[type, pa.DataType] = {
    bool: pa.bool_(),  # before int: bool is a subclass of int
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    bytes: pa.binary(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(annotation: Any, where: str) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) of one pydantic annotation."""
    nullable = False
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"{where}: only Optional[X] unions map to arrow, got {annotation}")
        annotation = args[0]
    if get_origin(annotation) is Annotated:
        explicit = [m for m in annotation.__metadata__ if isinstance(m, pa.DataType)]
        if explicit:
            return explicit[0], nullable
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Literal:
        kinds = {type(v) for v in get_args(annotation)}
        if len(kinds) != 1:
            raise TypeError(f"{where}: a Literal must hold values of one type")
        return _SCALARS[kinds.pop()], nullable
    if get_origin(annotation) is list:
        inner, _ = _arrow_type(get_args(annotation)[0], where)
        return pa.list_(inner), nullable
    for py, arrow in _SCALARS.items():
        if annotation is py:
            return arrow, nullable
    raise TypeError(f"{where}: no arrow type for {annotation}; add it to storage.schemas._SCALARS")


def arrow_schema(model: type[Row]) -> pa.Schema:
    """The pyarrow schema of a row model: same names, order, nullability and descriptions."""
    hints = typing.get_type_hints(model, include_extras=True)
    fields = []
    for name, info in model.model_fields.items():
        arrow, nullable = _arrow_type(hints[name], f"{model.__name__}.{name}")
        meta = {"description": info.description} if info.description else None
        fields.append(pa.field(name, arrow, nullable=nullable, metadata=meta))
    return pa.schema(fields)


@dataclass(frozen=True)
class TableDef:
    """One lake table: its name, row model, derived arrow schema and schema version."""

    name: str
    model: type[Row]
    version: int = 1  # bump when a column is added; older partitions stay readable

    @property
    def schema(self) -> pa.Schema:
        return arrow_schema(self.model)

    @property
    def required(self) -> list[str]:
        """Columns a row must provide (no default)."""
        return [n for n, f in self.model.model_fields.items() if f.is_required()]


TABLES: dict[str, TableDef] = {
    t.name: t
    for t in (
        TableDef("rounds", RoundRow),
        TableDef("prompts", PromptRow),
        TableDef("samples", SampleRow),
        TableDef("assessments", AssessmentRow, version=2),
        TableDef("judgments", JudgmentRow, version=2),
        TableDef("sft_examples", SftExampleRow),
        TableDef("evaluations", EvaluationRow),
        TableDef("checkpoints", CheckpointRow),
        TableDef("task_runs", TaskRunRow),
        TableDef("experiment_arms", ExperimentArmRow),
        TableDef("sampling_trials", SamplingTrialRow),
    )
}
