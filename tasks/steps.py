"""One Prefect task per pipeline step: typed, retried, cached on inputs, writing through storage/.

Each task reads its inputs from the lake, calls illume_core (directly, or through the Ray worker
pool), writes its own partition and returns a content-hashed reference ("samples/round=1/
part=self#<digest>") or a checkpoint path named by its content id. Because references carry
digests, a task downstream of a changed output sees new inputs and re-runs; everything else is
a cache hit. Cache records and results live in the lake (`<lake>/_prefect/`), not ~/.prefect.
Tasks return lake-relative checkpoint paths, and their cache keys never hold the lake's own path
(tasks/plumbing.py: the cache policy, partition references, task_runs rows, progress).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from prefect import task

from illume_core.settings import PipelineSettings
from illume_core.world.geneval import Metadata
from storage.registry import (  # the checkpoint registry; flows and benchmarks read it there too
    checkpoint_id_of,
    get_lake,
    lake_path,
    lake_ref,
    save_settings,
    set_current,
    set_round,
)
from storage.registry import record_checkpoint as _record_checkpoint  # (task sources unchanged)
from storage.schemas import (  # the tables' row models: every row a task writes is built as one
    AssessmentRow,
    EvaluationRow,
    JudgmentRow,
    PromptRow,
    SampleRow,
    SamplingTrialRow,
    SftExampleRow,
)
from tasks.plumbing import (  # re-exported: flows and benchmarks use steps.ref / steps.read_ref
    CACHE_POLICY,
    DRAWING_CACHE_POLICY,
    RETRIES,
    Progress,
    _logger,
    lake_sampling,
    load_settings,
    parse_ref,
    read_ref,
    record_run,
    ref,
)


def _sample_identity(round: int, checkpoint_id: str, row: dict) -> dict:
    """The columns that name one sample: its round, checkpoint, prompt, index and key."""
    from storage.schemas import sample_key

    return {
        "round": round,
        "checkpoint_id": checkpoint_id,
        "prompt_id": row["prompt_id"],
        "sample_index": row["sample_index"],
        "sample_key": sample_key(round, checkpoint_id, row["prompt_id"], row["sample_index"]),
    }


# ------------------------------------------------------------------------------------- data


def _prompt_rows(round: int, metas: list[Metadata], split: str) -> list[PromptRow]:
    from illume_core.eval.evaluations import prompt_id

    return [
        PromptRow(
            round=round, prompt_id=prompt_id(m), tag=m.tag, prompt=m.prompt, metadata=m.dumps(), split=split
        )
        for m in metas
    ]


@task(name="prepare-data", cache_policy=CACHE_POLICY, persist_result=True, **RETRIES)
def prepare_data(lake: str, settings: PipelineSettings) -> str:
    """Write the fixed ShapesEval prompt sets (eval and held-out compositions) for round 0."""
    from illume_core.eval.evaluations import shapeseval_prompts
    from illume_core.world.prompts import Holdout

    s = settings
    t0 = datetime.now(UTC)
    save_settings(lake, s.to_stored())
    holdout = Holdout.parse(list(s.holdout)) if s.holdout is not None else Holdout.default()
    refs = []
    for split, metas in shapeseval_prompts(s.b.eval_per_tag, holdout).items():
        rows = _prompt_rows(0, metas, split)
        refs.append(
            ref(
                get_lake(lake).write_partition(
                    "prompts",
                    0,
                    rows,
                    producer="prepare-data",
                    config_digest=s.digest(),
                    part=f"shapeseval-{split}",
                )
            )
        )
    record_run(lake, "prepare-data", 0, "prepare-data", t0, len(refs), 0.0)
    return ",".join(refs)


@task(name="select-prompts", cache_policy=CACHE_POLICY, persist_result=True, **RETRIES)
def select_prompts(lake: str, round: int, n_prompts: int, seed: int, source: str = "corpus") -> str:
    """The round's prompts: a tag-balanced, seeded draw from the base text-to-image prompts
    (`corpus`) or from the compositions they hold out, ShapesEval's prompts excepted (`novel`)."""
    from illume_core.eval.evaluations import shapeseval_prompts
    from illume_core.self_enhance.policy import draw_round_prompts, novel_prompts
    from illume_core.train.data import BaseCorpus

    s = load_settings(lake)
    t0 = datetime.now(UTC)
    corpus = BaseCorpus(s.cfg, s.corpus)
    if source == "corpus":
        space = corpus.prompts
    elif source == "novel":
        evaluation = shapeseval_prompts(s.b.eval_per_tag, corpus.holdout)
        space = novel_prompts(corpus.holdout, [m for ms in evaluation.values() for m in ms])
    else:
        raise ValueError(f"unknown prompt source {source!r}; choose corpus or novel")
    unique = draw_round_prompts(space, n_prompts, round, seed)
    # a novel prompt's composition is one the base corpus holds out: its split says so
    rows = _prompt_rows(round, unique, "train" if source == "corpus" else "heldout")
    info = get_lake(lake).write_partition(
        "prompts", round, rows, producer="select-prompts", config_digest=s.digest(), part="self"
    )
    record_run(lake, "select-prompts", round, "select-prompts", t0, info.rows, 0.0)
    return ref(info)


# ------------------------------------------------------------------------------- training


@task(name="train-vision", cache_policy=CACHE_POLICY, persist_result=True, **RETRIES)
def train_vision(lake: str, settings: PipelineSettings, vision_from: str | None = None) -> str:
    """Contrastive encoder + semantic tokenizer + text tokenizer -> an untrained-LLM checkpoint.

    With `vision_from` (a checkpoint folder of the same preset), the encoder and the tokenizer
    are that checkpoint's and only the text tokenizer and the fresh LLM are made here, at this
    run's seed: the seeds and arms of one experiment share one vision training, as ILLUME trains
    its tokenizer once.
    """
    import torch

    from illume_core.train.jobs import store
    from illume_core.train.stages import init_model, pretrain_vision, shared_vision

    s = settings
    t0, c0 = datetime.now(UTC), time.process_time()
    torch.manual_seed(s.seed)
    log = _logger()
    extra = {"round": 0, "settings": s.digest()}
    from storage import blobs

    if vision_from is not None:
        semantic, extra["vision_from"] = shared_vision(s.cfg, blobs.local_checkpoint(vision_from))
        log.info("vision encoder and tokenizer from checkpoint %s (not trained again)", extra["vision_from"])
    else:
        total = {"encoder": s.vision.encoder_steps, "tokenizer": s.vision.tokenizer_steps}
        bars = {part: Progress(f"train-vision: {part} steps") for part in total}

        def progress(part: str, step: int, metrics: dict) -> None:
            bars[part](step + 1, total[part])
            if (step + 1) % max(1, total[part] // 10) == 0:
                shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
                log.info("%s step %d/%d: %s", part, step + 1, total[part], shown)

        semantic = pretrain_vision(s.cfg, s.vision, seed=s.seed, progress=progress)
    parts = init_model(s.cfg, semantic, seed=s.seed, n_text=s.b.n_text)
    uri, _ = store(parts, Path(blobs.checkpoint_root(lake)), "vision", None, extra)
    uri = blobs.publish_checkpoint(lake, str(uri))  # a bucket lake's: uploaded, its s3:// URI
    _record_checkpoint(lake, uri, "vision", 0)
    record_run(lake, "train-vision", 0, "train-vision", t0, 1, time.process_time() - c0)
    return lake_ref(lake, uri)


@task(
    name="train-stage",
    cache_policy=CACHE_POLICY,
    persist_result=True,
    **RETRIES,
    task_run_name="train-{stage}",
)
def train_stage(
    lake: str,
    settings: PipelineSettings,
    stage: str,
    parent: str,
    round: int = 0,
    sft_ref: str | None = None,
    steps: int | None = None,
    lr_scale: float = 1.0,
) -> str:
    """Run one stage recipe from `parent` on a Ray trainer actor; resumes after a crash."""
    from tasks.trainer import train_on_actor

    parent = lake_path(lake, parent)
    log = _logger()
    t0 = datetime.now(UTC)
    sft_rows, samples = [], {}
    if sft_ref:
        sft_rows = read_ref(lake, sft_ref)
        keys = {k for r in sft_rows for k in r["image_refs"]}
        samples = {
            r["sample_key"]: r
            for r in get_lake(lake).read("samples", round, "self").to_pylist()
            if r["sample_key"] in keys
        }
    bar = Progress(f"train-{stage}: optimizer steps")

    def progress(step: int, total: int, loss: float) -> None:
        bar(step, total)
        log.info("train-%s step %d/%d, loss %.3f", stage, step, total, loss)

    res = train_on_actor(
        settings,
        stage,
        parent,
        lake,
        round=round,
        sft_rows=sft_rows,
        samples_by_key=samples,
        sft_key=sft_ref,
        steps=steps,
        lr_scale=lr_scale,
        on_progress=progress,
    )
    log.info(
        "%s: %d steps%s, loss %.3f -> %.3f",
        stage,
        len(res.losses),
        f" (resumed at {res.resumed_from})" if res.resumed_from else "",
        res.losses[0] if res.losses else float("nan"),
        res.losses[-1] if res.losses else float("nan"),
    )
    _record_checkpoint(lake, res.path, stage, round)
    record_run(lake, f"train-{stage}", round, f"train-{stage}", t0, 1, res.compute_seconds)
    return lake_ref(lake, res.path)


@task(name="calibrate-sampling", cache_policy=CACHE_POLICY - "workers", persist_result=True, **RETRIES)
def calibrate_sampling(
    lake: str,
    checkpoint: str,
    candidates: list[str],
    per_tag: int,
    images_per_prompt: int,
    round: int = 0,
    workers: int = 2,
) -> str:
    """Draw `per_tag` tuning prompts of each tag, `images_per_prompt` images each (the budget's
    `calibration_per_tag` and `calibration_images`), under each candidate setting (short forms,
    `SamplingParams.setting`; the flows pass `SAMPLING_CANDIDATES`, default first), have the
    judge score them, and return the best as SamplingParams JSON (a tie keeps the earlier). Every
    setting's scores go to `sampling_trials` (the checkpoint's round); the flow stores the choice
    as the lake's setting."""
    from illume_core.eval import calibration
    from illume_core.model.sampling import IMAGE_SAMPLING, parse_setting
    from tasks.pool import get_pool

    t0 = datetime.now(UTC)
    if per_tag == 0:  # the budget chooses nothing: the pipeline's default
        return IMAGE_SAMPLING.model_dump_json()
    checkpoint = lake_path(lake, checkpoint)
    ck = checkpoint_id_of(checkpoint)
    items, metas = calibration.tuning_set(per_tag, images_per_prompt)
    pool = get_pool(checkpoint, workers)
    c0 = pool.compute_seconds
    scored = []
    for params in [parse_setting(c) for c in candidates]:
        rows = pool.map(
            "sample",
            items,
            key=lambda it: it["prompt_id"],
            kwargs={"params": params},
            progress=Progress(f"tuning images at {params.setting}"),
        )
        scored.append((params, calibration.setting_scores(rows, metas)))
    chosen = calibration.choose([(p, sc["overall"][0]) for p, sc in scored])
    out = [
        SamplingTrialRow(
            round=round,
            checkpoint_id=ck,
            setting=p.setting,
            params=p.model_dump_json(),
            tag=tag,
            accuracy=acc,
            n=n,
            chosen=p == chosen,
        )
        for p, sc in scored
        for tag, (acc, n) in sc.items()
    ]
    info = get_lake(lake).write_partition(
        "sampling_trials", round, out, producer="calibrate-sampling", checkpoint=ck, part=ck
    )
    record_run(lake, "calibrate-sampling", round, f"calibrate-{ck}", t0, info.rows, pool.compute_seconds - c0)
    _logger().info(
        "sampling on tuning prompts: %s; chosen %s",
        ", ".join(f"{p.setting} {sc['overall'][0]:.3f}" for p, sc in scored),
        chosen.setting,
    )
    return chosen.model_dump_json()


# ------------------------------------------------------------------------ the round's steps


@task(name="sample", cache_policy=DRAWING_CACHE_POLICY - "workers", persist_result=True, **RETRIES)
def sample(
    lake: str,
    round: int,
    checkpoint: str,
    prompts_ref: str,
    images_per_prompt: int,
    part: str = "self",
    workers: int = 2,
) -> str:
    """Draw K images per prompt on the worker pool (seeded per sample, with the lake's sampling
    setting) into samples/round=R."""
    from illume_core.eval.evaluations import sample_items
    from tasks.pool import get_pool

    t0 = datetime.now(UTC)
    checkpoint = lake_path(lake, checkpoint)
    metas = [Metadata.model_validate_json(r["metadata"]) for r in read_ref(lake, prompts_ref)]
    items = sample_items(metas, images_per_prompt, round)
    pool = get_pool(checkpoint, workers)
    c0 = pool.compute_seconds
    rows = pool.map(
        "sample",
        items,
        key=lambda it: it["prompt_id"],
        kwargs={"params": lake_sampling(lake)},
        progress=Progress(f"sample round {round}"),
    )
    ck = checkpoint_id_of(checkpoint)
    out = [
        SampleRow(
            **_sample_identity(round, ck, r), seed=r["seed"], png=r["png"], image_tokens=r["image_tokens"]
        )
        for r in rows
    ]
    info = get_lake(lake).write_partition("samples", round, out, producer="sample", checkpoint=ck, part=part)
    record_run(lake, "sample", round, f"sample-{part}", t0, info.rows, pool.compute_seconds - c0)
    return ref(info)


@task(name="assess", cache_policy=CACHE_POLICY - "workers", persist_result=True, **RETRIES)
def assess(
    lake: str,
    round: int,
    checkpoint: str,
    samples_ref: str,
    prompts_ref: str,
    assessor: str = "self",
    workers: int = 2,
    likelihood_margins: dict[str, float] | None = None,
) -> str:
    """Score every sample on object, count, colour and spatial: by the model itself (`self`: it
    answers the assessment question about the image; `likelihood`: its drawing's likelihood under
    the prompt against one-dimension counterfactuals, with `likelihood_margins` over the defaults)
    or by the judge."""
    from illume_core.model.engine import assessment_fields
    from illume_core.self_enhance.policy import judge_assessment
    from illume_core.settings import ASSESSORS
    from tasks.pool import get_pool

    if assessor not in ASSESSORS:
        raise ValueError(f"assessor must be one of {list(ASSESSORS)}, got {assessor!r}")
    t0 = datetime.now(UTC)
    checkpoint = lake_path(lake, checkpoint)
    prompts = {r["prompt_id"]: r for r in read_ref(lake, prompts_ref)}
    samples = read_ref(lake, samples_ref)
    # what the assessor reads: the image (self, judge) or the drawing's codes and its prompt's metadata
    items = [
        {
            "prompt_id": s["prompt_id"],
            "sample_index": s["sample_index"],
            "prompt": prompts[s["prompt_id"]]["prompt"],
            **(
                {"metadata": prompts[s["prompt_id"]]["metadata"], "image_tokens": s["image_tokens"]}
                if assessor == "likelihood"
                else {"png": s["png"]}
            ),
        }
        for s in samples
    ]
    compute = 0.0
    if assessor in ("self", "likelihood"):
        pool = get_pool(checkpoint, workers)
        c0 = pool.compute_seconds
        rows = pool.map(
            "assess" if assessor == "self" else "assess_likelihood",
            items,
            key=lambda it: it["prompt_id"],
            kwargs={"margins": dict(likelihood_margins or {})} if assessor == "likelihood" else None,
            progress=Progress(f"assess round {round}" + ("" if assessor == "self" else f" ({assessor})")),
        )
        compute = pool.compute_seconds - c0
    else:  # the judge as an external teacher: its verdicts in the model's own answer format
        c0 = time.process_time()
        rows = []
        for it in items:
            meta = Metadata.model_validate_json(prompts[it["prompt_id"]]["metadata"])
            text = judge_assessment(meta, it["png"])
            rows.append({**{k: v for k, v in it.items() if k != "png"}, **assessment_fields(text)})
        compute = time.process_time() - c0
    ck = samples[0]["checkpoint_id"] if samples else checkpoint_id_of(checkpoint)
    out = [
        AssessmentRow(
            **_sample_identity(round, ck, r),
            assessor=assessor,
            **{k: r[k] for k in r if k.endswith(("_verdict", "_reason"))},
            raw_text=r["raw_text"],
            parse_status=r["parse_status"],
        )
        for r in rows
    ]
    _, _, part = parse_ref(samples_ref)
    info = get_lake(lake).write_partition(
        "assessments", round, out, producer="assess", checkpoint=ck, part=f"{part}-{assessor}"
    )
    record_run(lake, "assess", round, f"assess-{part}-{assessor}", t0, info.rows, compute)
    return ref(info)


@task(name="judge", cache_policy=CACHE_POLICY, persist_result=True, **RETRIES)
def judge(lake: str, round: int, samples_ref: str, prompts_ref: str) -> str:
    """The independent judge's GenEval verdict on every sample (with per-dimension truth)."""
    from illume_core.eval.evaluations import judge_rows
    from storage.schemas import sample_key

    t0, c0 = datetime.now(UTC), time.process_time()
    metas = {r["prompt_id"]: Metadata.model_validate_json(r["metadata"]) for r in read_ref(lake, prompts_ref)}
    samples = read_ref(lake, samples_ref)
    rows = judge_rows(samples, metas)
    ck = {(s["prompt_id"], s["sample_index"]): s["checkpoint_id"] for s in samples}
    out = [
        JudgmentRow(
            round=round,
            checkpoint_id=(c := ck[(r["prompt_id"], r["sample_index"])]),
            sample_key=sample_key(round, c, r["prompt_id"], r["sample_index"]),
            **r,  # judge_rows' fields, the per-dimension <dim>_ok truths among them
        )
        for r in rows
    ]
    _, _, part = parse_ref(samples_ref)
    info = get_lake(lake).write_partition("judgments", round, out, producer="judge", part=part)
    record_run(lake, "judge", round, f"judge-{part}", t0, info.rows, time.process_time() - c0)
    return ref(info)


@task(name="reformat", cache_policy=CACHE_POLICY, persist_result=True, **RETRIES)
def reformat(
    lake: str, round: int, samples_ref: str, assessments_ref: str, prompts_ref: str, strategies: list[str]
) -> str:
    """Turn the round's assessments into sft_examples with the chosen strategies."""
    from illume_core.self_enhance.reformat import reformat_round

    t0, c0 = datetime.now(UTC), time.process_time()
    metas = {r["prompt_id"]: Metadata.model_validate_json(r["metadata"]) for r in read_ref(lake, prompts_ref)}
    samples = [{k: v for k, v in s.items() if k != "png"} for s in read_ref(lake, samples_ref)]
    rows = [
        SftExampleRow(**r)
        for r in reformat_round(samples, read_ref(lake, assessments_ref), metas, strategies, round)
    ]
    info = get_lake(lake).write_partition("sft_examples", round, rows, producer="reformat", part="self")
    record_run(lake, "reformat", round, "reformat", t0, info.rows, time.process_time() - c0)
    return ref(info)


@task(name="understand", cache_policy=CACHE_POLICY - "workers", persist_result=True, **RETRIES)
def understand(lake: str, round: int, checkpoint: str, workers: int = 2) -> list[dict]:
    """VQA on held-out scenes and editing tasks judged against their target scenes: evaluation rows."""
    from illume_core.eval.evaluations import edit_items, edit_scores, evaluation_rows, vqa_items, vqa_scores
    from tasks.pool import get_pool

    s = load_settings(lake)
    t0 = datetime.now(UTC)
    checkpoint = lake_path(lake, checkpoint)
    ck = checkpoint_id_of(checkpoint)
    pool = get_pool(checkpoint, workers)
    c0 = pool.compute_seconds
    items = vqa_items(s.b.vqa_questions, s.cfg.image_size)
    answers = pool.map("ask", items, key=lambda it: it["id"])
    rows = evaluation_rows(round, ck, "vqa", "heldout", "accuracy", vqa_scores(items, answers))
    edits = edit_items(s.b.edit_tasks, s.cfg.image_size)
    outputs = pool.map("edit", edits, key=lambda it: it["id"])
    rows += evaluation_rows(round, ck, "editing", "heldout", "accuracy", edit_scores(edits, outputs))
    record_run(lake, "understand", round, f"understand-{ck}", t0, 0, pool.compute_seconds - c0)
    return rows


@task(name="evaluate", cache_policy=CACHE_POLICY, persist_result=True, **RETRIES)
def evaluate(lake: str, round: int, checkpoint: str, judged: dict, assessed: dict, understood: list) -> str:
    """Score a checkpoint from its evaluation drawings: ShapesEval per split (`judged`: split ->
    judgments ref), the model's own assessments of them against the judge (`assessed`: benchmark
    name -> assessments ref, eval split), and the VQA and editing rows of `understand`; one evaluations
    partition. The sub-flow `flows.pipeline.evaluation` runs the tasks that draw and judge."""
    from illume_core.eval.evaluations import (
        agreement,
        assessment_confusion,
        balanced_accuracy,
        confusion_rows,
        evaluation_rows,
        tag_scores,
    )

    t0 = datetime.now(UTC)
    ck = checkpoint_id_of(lake_path(lake, checkpoint))
    rows: list[dict] = []
    for split, judg_ref in judged.items():
        judgments = read_ref(lake, judg_ref)
        rows += evaluation_rows(round, ck, "shapeseval", split, "accuracy", tag_scores(judgments))
        if split != "eval":
            continue
        # the model's two ways of judging its own drawings, against the judge
        for bench, ass_ref in assessed.items():
            assessments = read_ref(lake, ass_ref)
            rows += evaluation_rows(round, ck, bench, split, "agreement", agreement(assessments, judgments))
            confusion = assessment_confusion(assessments, judgments)
            rows += evaluation_rows(
                round, ck, bench, split, "balanced_accuracy", balanced_accuracy(confusion)
            )
            rows += confusion_rows(round, ck, split, confusion, benchmark=bench)
            parsed = sum(a["parse_status"] == "ok" for a in assessments)
            rate = {"overall": (parsed / max(1, len(assessments)), len(assessments))}
            rows += evaluation_rows(round, ck, bench, split, "parse_rate", rate)
    rows += understood
    info = get_lake(lake).write_partition(  # the rows of illume_core's figures, as the table's row model
        "evaluations", round, [EvaluationRow(**r) for r in rows], producer="evaluate", checkpoint=ck, part=ck
    )
    record_run(lake, "evaluate", round, f"evaluate-{ck}", t0, info.rows, 0.0)
    return ref(info)


# the model's two ways of judging its own evaluation drawings -> their benchmark name
EVAL_ASSESSORS = {"self": "self_assessment", "likelihood": "self_assessment_likelihood"}


def overall(
    lake: str,
    eval_ref: str,
    benchmark: str = "shapeseval",
    split: str = "eval",
    tag: str = "overall",
    metric: str = "accuracy",
) -> float | None:
    for r in read_ref(lake, eval_ref):
        if (r["benchmark"], r["split"], r["tag"], r["metric"]) == (benchmark, split, tag, metric):
            return float(r["value"])
    return None


@task(name="promote", cache_policy=CACHE_POLICY, persist_result=True, **RETRIES)
def promote(
    lake: str,
    round: int,
    base: str,
    candidate: str,
    base_eval_ref: str,
    candidate_eval_ref: str,
    assessments_ref: str,
    margin: float,
    min_parse_rate: float,
    params_json: str,
) -> dict:
    """Make the candidate current unless ShapesEval fell by more than `margin` or parsing failed.

    The parse rate that gates is the candidate's own (its assessments of its evaluation images
    must stay parseable); the round's rate, from the base model's assessments, is reported beside it.
    """
    from illume_core.self_enhance.policy import promotion

    base, candidate = lake_path(lake, base), lake_path(lake, candidate)
    rows = read_ref(lake, assessments_ref)
    round_parse_rate = sum(r["parse_status"] == "ok" for r in rows) / max(1, len(rows))
    cand_rate = overall(lake, candidate_eval_ref, benchmark="self_assessment", metric="parse_rate")
    parse_rate = round_parse_rate if cand_rate is None else cand_rate
    before, after = overall(lake, base_eval_ref), overall(lake, candidate_eval_ref)
    status, reason = promotion(before, after, parse_rate, round_parse_rate, margin, min_parse_rate)
    decision = {
        "round": round,
        "status": status,
        "reason": reason,
        "before": before,
        "after": after,
        "parse_rate": parse_rate,
        "round_parse_rate": round_parse_rate,
        "current": lake_ref(lake, candidate if status == "promoted" else base),  # cached: no lake path
    }
    set_round(lake, round, base, candidate, status, reason, params_json)
    if status == "promoted":
        set_current(lake, candidate, round)
    return decision


def params_json(**params) -> str:
    return json.dumps(params, sort_keys=True, default=str)
