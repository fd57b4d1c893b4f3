"""The checkpoint registry: which checkpoints a lake holds, which one is current, each round's row.

A checkpoint is a folder under `<lake>/checkpoints/<id>/` (written by illume_core/model/checkpoint.py,
named by its content id); the `checkpoints` table has one row per folder, `<lake>/checkpoints/
current` names the last promoted one (a lake-relative path, replaced atomically), and the
`rounds` table one row per round. Paths inside the lake travel as lake-relative references
(`lake_ref`), so a lake copied or mounted elsewhere keeps every cache key and pointer.
Plain functions over a lake root: tasks, flows and benchmarks share them; no orchestration here.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from storage import blobs
from storage.lake import Lake
from storage.schemas import CheckpointRow, RoundRow

MANIFEST_FILE = "manifest.json"  # a checkpoint folder's manifest (illume_core/model/checkpoint.py)
SETTINGS_FILE = "pipeline.json"  # the run's settings (illume_core.settings.PipelineSettings)
# the sampling setting chosen for the lake's drawings (illume_core.eval.calibration)
SAMPLING_FILE = "sampling.json"
CURRENT_POINTER = "checkpoints/current"  # text: the lake-relative path of the promoted checkpoint


_LAKES: dict[str, Lake] = {}


def get_lake(root: str) -> Lake:
    """One Lake object per root in this process, so the flow's writer lock is re-entrant."""
    key = os.path.abspath(root) if "://" not in root else root
    if key not in _LAKES:
        _LAKES[key] = Lake(root)
    return _LAKES[key]


def lake_ref(lake: str, path: str) -> str:
    """A path inside the lake as the lake-relative path that tasks return and cache keys hold.

    Anything else (a relative path, a path outside the lake, a URI, any other text) is returned
    as it is.
    """
    lake = blobs.normalize(lake)  # file:///x is /x; S3:// is s3://
    if blobs.remote(lake):
        base = blobs.uri(lake) + "/"
        return path[len(base) :] if path.startswith(base) else path
    if "://" in path or not os.path.isabs(path):
        return path
    root, target = Path(lake).resolve(), Path(path).resolve()
    return str(target.relative_to(root)) if target.is_relative_to(root) else path


def lake_path(lake: str, ref: str) -> str:
    """The absolute path (an s3:// URI in a bucket lake) of a lake-relative path; an absolute path
    or a URI is returned as it is."""
    return ref if "://" in ref or os.path.isabs(ref) else blobs.uri(lake, ref)


def _save_root_file(lake: str, name: str, document: str) -> None:
    """Write a document at the lake's root, replaced atomically (a reader sees old or new)."""
    blobs.write_text(lake, name, document)


def save_settings(lake: str, document: str) -> None:
    """Store the run's settings document at the lake's root, replaced atomically."""
    _save_root_file(lake, SETTINGS_FILE, document)


def read_settings(lake: str) -> str:
    """The lake's settings document, as `save_settings` stored it."""
    text = blobs.read_text(lake, SETTINGS_FILE)
    if text is None:
        raise FileNotFoundError(
            f"{blobs.uri(lake, SETTINGS_FILE)} is missing: this lake has no trained base model yet; "
            f"run `illume train --lake {lake}` (or `illume demo`) first"
        )
    return text


def save_sampling(lake: str, document: str) -> None:
    """Store the lake's chosen sampling setting (SamplingParams JSON) at its root, replaced atomically."""
    _save_root_file(lake, SAMPLING_FILE, document)


def read_sampling(lake: str) -> str | None:
    """The lake's chosen sampling setting as `save_sampling` stored it; None for a lake trained
    before the train pipeline chose one (its drawings use the pipeline's default)."""
    return blobs.read_text(lake, SAMPLING_FILE)


def checkpoint_manifest(folder: str | os.PathLike[str]) -> dict:
    """The manifest of a checkpoint folder, local or s3:// (its id, parent, stage, files; not verified here)."""
    return blobs.read_manifest(str(folder))


def checkpoint_id_of(uri: str) -> str:
    """The content id of the checkpoint folder at `uri` (from its manifest)."""
    return checkpoint_manifest(uri)["id"]


def record_checkpoint(lake: str, path: str, stage: str, round: int) -> None:
    """The checkpoints table row of a checkpoint folder."""
    m = checkpoint_manifest(path)
    digest = blobs.manifest_digest(str(path))
    get_lake(lake).write_partition(
        "checkpoints",
        round,
        [
            CheckpointRow(
                checkpoint_id=m["id"],
                parent=m.get("parent"),
                round=round,
                stage=stage,
                uri=lake_ref(lake, str(path)),
                manifest_digest=digest,
                promoted=False,
                created_at=datetime.fromisoformat(m["created_at"]),
            )
        ],
        producer=f"train-{stage}",
        checkpoint=m["id"],
        part=m["id"],
    )


def set_round(
    lake: str, round: int, base: str, candidate: str | None, status: str, reason: str | None, params_json: str
) -> None:
    """Write the round's row (replacing the 'running' row written at its start)."""
    lk = get_lake(lake)
    base, candidate = lake_path(lake, base), candidate and lake_path(lake, candidate)
    old = lk.read("rounds", round).to_pylist()
    started = old[0]["started_at"] if old else datetime.now(UTC)
    lk.write_partition(
        "rounds",
        round,
        [
            RoundRow(
                round=round,
                base_checkpoint=checkpoint_id_of(base),
                candidate_checkpoint=checkpoint_id_of(candidate) if candidate else None,
                status=status,
                reason=reason,
                started_at=started,
                ended_at=None if status == "running" else datetime.now(UTC),
                params=params_json,
            )
        ],
        producer="round",
        part="round",
    )


def set_current(lake: str, checkpoint: str, round: int) -> None:
    """Point <lake>/checkpoints/current at a checkpoint (atomic) and mark it promoted."""
    # relative to the lake root, so a copied or moved lake keeps pointing at its own checkpoint
    checkpoint = lake_path(lake, checkpoint)
    blobs.write_text(lake, CURRENT_POINTER, f"{lake_ref(lake, checkpoint)}\n")
    lk = get_lake(lake)
    ck = checkpoint_id_of(checkpoint)
    for info in lk.partitions("checkpoints"):
        if info.part == ck:
            rows = lk.read("checkpoints", info.round, ck).to_pylist()
            for r in rows:
                r["promoted"] = True
            lk.write_partition("checkpoints", info.round, rows, producer="promote", checkpoint=ck, part=ck)


def current_checkpoint(lake: str) -> str | None:
    """The current (last promoted) checkpoint folder of a lake, or None before any training."""
    text = blobs.read_text(lake, CURRENT_POINTER)
    return None if text is None else lake_path(lake, text.strip())


def vision_checkpoint(path: str) -> str:
    """The checkpoint folder a `--vision-from` names: a checkpoint folder, or a lake's vision checkpoint."""
    root = blobs.uri(path)  # an absolute path, or the s3:// URI as given
    if blobs.exists(f"{root}/{MANIFEST_FILE}"):
        return root
    if blobs.remote(path) or (Path(path) / "checkpoints").is_dir():
        rows = [r for r in get_lake(path).read("checkpoints").to_pylist() if r["stage"] == "vision"]
        if rows:
            last = max(rows, key=lambda r: r["created_at"])
            return lake_path(root, last["uri"])
        raise FileNotFoundError(f"--vision-from {path}: that lake has no vision checkpoint yet")
    raise FileNotFoundError(
        f"--vision-from {path}: neither a checkpoint folder (with manifest.json) nor a lake with checkpoints"
    )


def shared_vision_of(lake: str) -> str | None:
    """The lake's own vision checkpoint if it was made with `--vision-from`, else None."""
    if not blobs.remote(lake) and not (Path(lake) / "checkpoints").is_dir():
        return None
    try:
        own = vision_checkpoint(lake)
    except FileNotFoundError:
        return None
    return own if checkpoint_manifest(own).get("extra", {}).get("vision_from") else None
