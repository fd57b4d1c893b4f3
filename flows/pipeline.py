"""The Prefect flows: `train_pipeline`, `self_enhancement_round`, `evaluate_checkpoint`, and the
sub-flow `evaluation` that the three share.

They read like a table of contents: each line is a task from tasks/steps.py. Every flow holds
the lake's writer lock for its whole run, so a second round on the same lake waits, then
refuses with a message naming the holder. Tasks cache on their inputs (results in the lake):
re-running a flow after a crash redoes only what did not finish, and `rerun=["assess"]`
refreshes the named tasks while everything downstream of a changed output follows.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from prefect import flow, get_run_logger

from flows.api_watch import ApiWatch
from illume_core.settings import PipelineSettings, RoundConfig
from storage import blobs, registry
from storage.lock import LakeBusyError
from storage.registry import get_lake
from tasks import steps
from tasks.faults import FAULT_ENV, boundary_hooks

TASK_NAMES = (
    "prepare-data",
    "select-prompts",
    "train-vision",
    "train-stage",
    "calibrate-sampling",
    "sample",
    "assess",
    "judge",
    "reformat",
    "finetune",
    "evaluate",
    "promote",
)


def _prefect_block(lake: str, rel: str):
    """The filesystem block for <lake>/_prefect/<rel>: a LocalFileSystem for a local lake; for a
    bucket lake a RemoteFileSystem on `lakes3://` (pyarrow's S3 filesystem through fsspec,
    storage/fsspec_s3.py), so task results and cache records live in the bucket too."""
    if blobs.remote(lake):
        from prefect.filesystems import RemoteFileSystem

        from storage import fsspec_s3

        fsspec_s3.register()
        return RemoteFileSystem(basepath=fsspec_s3.prefect_basepath(blobs.uri(lake), f"_prefect/{rel}"))
    from prefect.filesystems import LocalFileSystem

    path = Path(blobs.uri(lake, f"_prefect/{rel}"))
    path.mkdir(parents=True, exist_ok=True)
    return LocalFileSystem(basepath=str(path))


_RESULT_BLOCKS: dict[str, str] = {}
_KEY_BLOCKS: dict[str, object] = {}


def _result_storage(lake: str) -> str:
    """A saved filesystem block for <lake>/_prefect/results (tasks accept only saved blocks).

    Saved once per lake and process, under a name derived from the location, so every process
    (CLI, worker, test) writes task results into the lake, whatever its PREFECT_HOME.
    """
    where = blobs.uri(lake, "_prefect/results")
    if where not in _RESULT_BLOCKS:
        block = _prefect_block(lake, "results")
        name = "illume-results-" + hashlib.sha256(where.encode()).hexdigest()[:12]
        block.save(name, overwrite=True)
        _RESULT_BLOCKS[where] = f"{block.get_block_type_slug()}/{name}"
    return _RESULT_BLOCKS[where]


def _key_storage(lake: str):
    """Where the cache records go: <lake>/_prefect/cache-keys (a path, or the bucket's block)."""
    where = blobs.uri(lake, "_prefect/cache-keys")
    if where not in _KEY_BLOCKS:
        _KEY_BLOCKS[where] = _prefect_block(lake, "cache-keys") if blobs.remote(lake) else where
        if not blobs.remote(lake):
            Path(where).mkdir(parents=True, exist_ok=True)
    return _KEY_BLOCKS[where]


# the evaluation sub-flow's tasks: `rerun=["evaluate"]` refreshes all of them
EVAL_TASKS = ("eval-sample", "eval-judge", "eval-assess", "understand", "evaluate")
# their keys hold the lake's sampling setting (`understand`'s edits draw with EDIT_SAMPLING, not it)
DRAWING_TASKS = ("sample", "eval-sample")
POOL_TASKS = (
    "sample",
    "assess",
    "eval-sample",
    "eval-assess",
    "understand",
    "calibrate-sampling",
)  # worker count left out


def _opts(lake: str, rerun: list[str], name: str) -> dict:
    """Per-run task options: results and cache records in the lake; refresh the named tasks."""
    base = steps.DRAWING_CACHE_POLICY if name in DRAWING_TASKS else steps.CACHE_POLICY
    policy = base.configure(key_storage=_key_storage(lake))
    refresh = name in rerun or ("evaluate" in rerun and name in EVAL_TASKS)
    return {"cache_policy": policy, "refresh_cache": refresh, "result_storage": _result_storage(lake)}


def _candidates() -> list[str]:
    """The sampling settings a base model chooses from, short forms (the calibrate task's input,
    so a changed candidate list is a new cache key)."""
    from illume_core.model.sampling import SAMPLING_CANDIDATES  # torch: only when a flow runs

    return [p.setting for p in SAMPLING_CANDIDATES]


def _check_rerun(rerun: list[str]) -> list[str]:
    bad = [r for r in rerun if r not in TASK_NAMES]
    if bad:
        raise ValueError(f"unknown task(s) in rerun: {bad}; choose from {', '.join(TASK_NAMES)}")
    return list(rerun)


def _t(task, lake: str, rerun: list[str], name: str | None = None):
    name = name or task.name
    opts = _opts(lake, rerun, name)
    if name in POOL_TASKS:  # the worker count never changes results
        opts["cache_policy"] = opts["cache_policy"] - "workers"
    if os.environ.get(FAULT_ENV):  # the fault matrix kills the flow at task boundaries
        opts.update(boundary_hooks(name))
    if name != task.name:
        opts["name"] = name
    return task.with_options(**opts)


class _Locked:
    """Hold the lake's writer lock for a flow run; a busy lake gives a clear refusal."""

    def __init__(self, lake: str, owner: str, timeout_s: float) -> None:
        self.lake, self.owner, self.timeout_s = lake, owner, timeout_s

    def __enter__(self):
        try:
            self.ctx = get_lake(self.lake).writer(owner=self.owner, timeout_s=self.timeout_s)
            self.ctx.__enter__()
        except LakeBusyError as e:
            raise LakeBusyError(
                f"{e} (another round is running on this lake; this one did not start)"
            ) from None
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)  # the lake rebuilds its catalog on release if this run wrote


@flow(name="train-pipeline", flow_run_name="train-{preset}-{budget}-seed{seed}")
def train_pipeline(
    lake: str = "lake",
    preset: str = "tiny",
    budget: str = "demo",
    seed: int = 0,
    workers: int = 2,
    rerun: list[str] | None = None,
    lock_timeout_s: float = 10.0,
    vision_from: str | None = None,
) -> dict:
    """Data -> vision + text tokenizers -> stages 0..3 -> the sampling setting -> evaluate -> round 0
    (the first current model).

    `vision_from` (a checkpoint folder, or a lake) reuses that run's trained vision encoder and
    tokenizer instead of training them again: the seeds of one experiment share one vision run.
    """
    rerun = _check_rerun(rerun or [])
    if vision_from is not None:
        vision_from = registry.vision_checkpoint(vision_from)
    else:  # a lake trained on shared vision keeps it when trained again without the flag
        vision_from = registry.shared_vision_of(lake)
    log = get_run_logger()
    s = PipelineSettings(preset=preset, budget=budget, seed=seed)
    from tasks.cluster import pinned_train_threads  # imports ray: only when a flow runs

    resume = f"illume train --lake {lake} --preset {preset} --budget {budget} --seed {seed}" + (
        f" --vision-from {vision_from}" if vision_from else ""
    )
    with ApiWatch(resume), _Locked(lake, "train-pipeline", lock_timeout_s), pinned_train_threads():
        eval_refs = _t(steps.prepare_data, lake, rerun)(lake, s)
        # tasks return lake-relative checkpoint paths (a cache hit in a moved lake must name its own)
        ck = registry.lake_path(lake, _t(steps.train_vision, lake, rerun)(lake, s, vision_from))
        for stage in ("stage0", "stage1", "stage2", "stage3"):
            ck = registry.lake_path(lake, _t(steps.train_stage, lake, rerun)(lake, s, stage, ck, 0))
            log.info("%s -> %s", stage, ck)
        # the base model's sampling setting, chosen on tuning prompts: every later drawing in the
        # lake uses it (its evaluation below, the rounds' samples)
        b = s.b
        chosen = _t(steps.calibrate_sampling, lake, rerun)(
            lake, ck, _candidates(), b.calibration_per_tag, b.calibration_images, 0, workers
        )
        registry.save_sampling(lake, chosen)
        ev = evaluation(lake, 0, ck, eval_refs, workers, rerun)
        registry.set_round(
            lake, 0, ck, ck, "promoted", "base training run", steps.params_json(**s.model_dump())
        )
        registry.set_current(lake, ck, 0)
        score = steps.overall(lake, ev)
    log.info("base model %s: ShapesEval overall %s", ck, score)
    return {"checkpoint": ck, "evaluation": ev, "shapeseval_overall": score}


def _next_round(lake: str) -> int:
    """The round to run: an unfinished ('running') round is finished first, else last + 1."""
    rows = get_lake(lake).read("rounds").to_pylist()
    if not rows:
        raise FileNotFoundError(
            f"the lake at {lake} has no base model; run `illume train` or `illume demo` first"
        )
    running = [r["round"] for r in rows if r["status"] == "running"]
    return min(running) if running else max(r["round"] for r in rows) + 1


def _round_run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    r = p.get("round")
    assessor = RoundConfig.model_validate(p.get("config") or {}).assessor  # validated: a RoundConfig
    return f"round-{'next' if r is None else r}-{assessor}"


def _checkpoint_run_name(action: str):
    """A flow-run namer: '<action>-<checkpoint id>', or '<action>-current' by default."""

    def name() -> str:
        from prefect.runtime import flow_run

        ck = flow_run.parameters.get("checkpoint")
        return f"{action}-{Path(ck).name if ck else 'current'}"

    return name


@flow(name="self-enhancement-round", flow_run_name=_round_run_name)
def self_enhancement_round(
    lake: str = "lake",
    round: int | None = None,
    config: RoundConfig | None = None,
    workers: int = 2,
    rerun: list[str] | None = None,
    lock_timeout_s: float = 10.0,
) -> dict:
    """Sample -> assess -> judge -> reformat -> finetune -> evaluate -> promote, from the current model.

    `config` holds the round's knobs (None: RoundConfig's defaults). Prefect validates it before
    the run starts (a deployment passes it as a mapping), so a bad assessor or strategy is refused
    before any work.
    """
    rerun = _check_rerun(rerun or [])
    cfg = config or RoundConfig()
    resume = "the same command" if round is not None else f"illume round --lake {lake}"
    with ApiWatch(resume, also=" (or start the same deployment run again)"):
        return _round_body(lake, round, cfg, workers, rerun, lock_timeout_s)


def _round_body(
    lake: str, round: int | None, cfg: RoundConfig, workers: int, rerun: list[str], lock_timeout_s: float
) -> dict:
    """The round itself, under `self_enhancement_round`'s API watch."""
    log = get_run_logger()
    from tasks.cluster import pinned_train_threads  # imports ray: only when a flow runs

    with _Locked(lake, "self-enhancement-round", lock_timeout_s), pinned_train_threads():
        r = _next_round(lake) if round is None else round
        s = steps.load_settings(lake)
        prev = get_lake(lake).read("rounds", r).to_pylist()
        base = registry.current_checkpoint(lake)
        if prev and prev[0]["status"] != "running":
            log.info(
                "round %d already ended (%s); re-running it from its recorded base", r, prev[0]["status"]
            )
        if prev:
            base = _uri_of(lake, prev[0]["base_checkpoint"])
        if base is None:
            raise FileNotFoundError(f"no current checkpoint in {lake}; run `illume train` first")
        params = cfg.params_json(r)
        if not prev:
            registry.set_round(lake, r, base, None, "running", None, params)
        eval_refs = _eval_refs(lake)
        prompts = _t(steps.select_prompts, lake, rerun)(lake, r, cfg.n_prompts, cfg.seed, cfg.prompts)
        samples = _t(steps.sample, lake, rerun)(
            lake, r, base, prompts, cfg.images_per_prompt, "self", workers
        )
        assessed = _t(steps.assess, lake, rerun)(
            lake, r, base, samples, prompts, cfg.assessor, workers, cfg.likelihood_margins or None
        )
        judged = _t(steps.judge, lake, rerun)(lake, r, samples, prompts)
        sft = _t(steps.reformat, lake, rerun)(lake, r, samples, assessed, prompts, list(cfg.strategies))
        cand = registry.lake_path(
            lake,
            _t(steps.train_stage, lake, rerun, "finetune")(
                lake, s, "self_enhance", base, r, sft, cfg.finetune_steps, cfg.finetune_lr_scale
            ),
        )
        base_eval = evaluation(lake, _round_of(lake, base), base, eval_refs, workers, rerun)
        cand_eval = evaluation(lake, r, cand, eval_refs, workers, rerun)
        decision = _t(steps.promote, lake, rerun)(
            lake, r, base, cand, base_eval, cand_eval, assessed, cfg.margin, cfg.min_parse_rate, params
        )
        decision = {**decision, "current": registry.lake_path(lake, decision["current"])}
    _publish(lake, r, base_eval, cand_eval, decision, samples, assessed, judged, prompts)
    log.info("round %d %s: %s", r, decision["status"], decision["reason"])
    return {
        **decision,
        "samples": samples,
        "assessments": assessed,
        "judgments": judged,
        "sft": sft,
        "candidate": cand,
        "evaluation": cand_eval,
    }


def _checkpoint_or_current(lake: str, checkpoint: str | None) -> str:
    """The checkpoint a command names, else the lake's current one (a clear error when it has none)."""
    ck = checkpoint or registry.current_checkpoint(lake)
    if ck is None:
        raise FileNotFoundError(f"no current checkpoint in {lake}; pass --checkpoint or run `illume train`")
    return ck


@flow(name="evaluate-checkpoint", flow_run_name=_checkpoint_run_name("evaluate"))
def evaluate_checkpoint(
    lake: str = "lake",
    checkpoint: str | None = None,
    workers: int = 2,
    rerun: list[str] | None = None,
    lock_timeout_s: float = 10.0,
) -> dict:
    """ShapesEval, VQA and self-assessment agreement of a checkpoint (default: the current one)."""
    rerun = _check_rerun(rerun or [])
    with ApiWatch(f"illume eval --lake {lake}"), _Locked(lake, "evaluate-checkpoint", lock_timeout_s):
        ck = _checkpoint_or_current(lake, checkpoint)
        ev = evaluation(lake, _round_of(lake, ck), ck, _eval_refs(lake), workers, rerun)
    rows = steps.read_ref(lake, ev)
    return {"checkpoint": ck, "evaluation": ev, "rows": rows}


@flow(name="choose-sampling", flow_run_name=_checkpoint_run_name("calibrate"))
def choose_sampling(
    lake: str = "lake",
    checkpoint: str | None = None,
    workers: int = 2,
    rerun: list[str] | None = None,
    lock_timeout_s: float = 10.0,
) -> dict:
    """Choose the lake's sampling setting again, on tuning prompts, with a checkpoint (default: the
    current one): what the train pipeline does after base training, for a lake trained before it
    did, or after rounds have moved the model. Later drawings (`illume eval`, rounds) use it."""
    rerun = _check_rerun(rerun or [])
    with ApiWatch(f"illume calibrate --lake {lake}"), _Locked(lake, "choose-sampling", lock_timeout_s):
        ck = _checkpoint_or_current(lake, checkpoint)
        b = steps.load_settings(lake).b
        chosen = _t(steps.calibrate_sampling, lake, rerun)(
            lake, ck, _candidates(), b.calibration_per_tag, b.calibration_images, _round_of(lake, ck), workers
        )
        registry.save_sampling(lake, chosen)
    get_run_logger().info("sampling setting of %s: %s", lake, chosen)
    return {"checkpoint": ck, "sampling": chosen}


@flow(name="evaluation", flow_run_name="evaluate-r{round}")
def evaluation(
    lake: str,
    round: int,
    checkpoint: str,
    eval_prompt_refs: str,
    workers: int = 2,
    rerun: list[str] | None = None,
) -> str:
    """ShapesEval (seen and held-out compositions), the model's assessments of its own evaluation
    drawings, VQA and editing of one checkpoint, as tasks: draw -> judge -> assess -> score.

    A sub-flow of the three flows above (they hold the lake's writer lock); the evaluation
    drawings are stored like any samples, in a part named by split and checkpoint.
    """
    rerun = rerun or []
    n_images = steps.load_settings(lake).b.eval_images_per_prompt
    ck = registry.checkpoint_id_of(registry.lake_path(lake, checkpoint))
    judged: dict[str, str] = {}
    assessed: dict[str, str] = {}
    for pref in eval_prompt_refs.split(","):
        split = steps.parse_ref(pref)[2].removeprefix("shapeseval-")
        samp = _t(steps.sample, lake, rerun, "eval-sample")(
            lake, round, checkpoint, pref, n_images, part=f"eval-{split}-{ck}", workers=workers
        )
        judged[split] = _t(steps.judge, lake, rerun, "eval-judge")(lake, round, samp, pref)
        if split == "eval":
            for assessor, bench in steps.EVAL_ASSESSORS.items():
                assessed[bench] = _t(steps.assess, lake, rerun, "eval-assess")(
                    lake, round, checkpoint, samp, pref, assessor, workers
                )
    understood = _t(steps.understand, lake, rerun)(lake, round, checkpoint, workers)
    return _t(steps.evaluate, lake, rerun)(lake, round, checkpoint, judged, assessed, understood)


# ------------------------------------------------------------------------------------ helpers


def _eval_refs(lake: str) -> str:
    lk = get_lake(lake)
    refs = [
        steps.ref(p) for p in lk.partitions("prompts") if p.round == 0 and p.part.startswith("shapeseval-")
    ]
    if not refs:
        raise FileNotFoundError(f"{lake} has no ShapesEval prompts; run `illume train` first")
    return ",".join(sorted(refs))  # eval before heldout, the order prepare-data returns them in


def _uri_of(lake: str, checkpoint_id: str) -> str:
    return registry.lake_path(lake, f"checkpoints/{checkpoint_id}")


def _round_of(lake: str, checkpoint: str) -> int:
    ck = registry.checkpoint_id_of(checkpoint)
    for p in get_lake(lake).partitions("checkpoints"):
        if p.part == ck:
            return p.round
    return 0


def _publish(
    lake: str,
    r: int,
    base_eval: str,
    cand_eval: str,
    decision: dict,
    samples: str,
    assessed: str,
    judged: str,
    prompts: str,
) -> None:
    """Prefect artifacts: scores per tag against the previous round (a table), and a markdown
    summary with the decision, its reason, the same scores and the samples themselves (inline
    images with their prompt, verdicts and the judge's truths)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from flows.report import round_summary_markdown, scores_against_previous

    try:
        table = scores_against_previous(steps.read_ref(lake, base_eval), steps.read_ref(lake, cand_eval))
        create_table_artifact(
            table, key=f"round-{r}-scores", description=f"ShapesEval per tag, round {r} vs its base"
        )
        rows = steps.read_ref(lake, samples)
        _grid_png(rows, lake, r)  # the plain grid beside the report, as before
        md = round_summary_markdown(
            r,
            decision,
            table,
            rows,
            {p["prompt_id"]: p["prompt"] for p in steps.read_ref(lake, prompts)},
            steps.read_ref(lake, assessed),
            steps.read_ref(lake, judged),
        )
        create_markdown_artifact(md, key=f"round-{r}-summary", description=f"round {r} summary")
    except Exception as e:  # artifacts are a view; a failure to publish must not fail the round
        get_run_logger().warning("could not publish artifacts: %s", e)


def _grid_png(rows: list[dict], lake: str, r: int, n: int = 16) -> str | None:
    """A grid of the round's first samples, saved beside the report."""
    from PIL import Image

    from illume_core.model.images import from_png

    rows = rows[:n]
    if not rows:
        return None
    ims = [from_png(x["png"]) for x in rows]
    w, h = ims[0].size
    cols = 8
    grid = Image.new("RGB", (cols * w, -(-len(ims) // cols) * h), (255, 255, 255))
    for i, im in enumerate(ims):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return blobs.write_bytes(lake, f"reports/round-{r}-samples.png", buf.getvalue())
