"""Checkpoints: a self-describing directory of safetensors + JSON, verified on load; never pickle.

Files: model.safetensors (IllumeModel), tokenizer.safetensors (the semantic tokenizer),
optimizer.safetensors + optimizer.json (optimizer tensors and scalars, when given), config.json
(IllumeConfig, the LLM's transformers config, text vocab size, stage), tokenizer.json (the text
tokenizer) and manifest.json (sha256 per file, lineage). The id is a digest of the file digests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from transformers import LlamaConfig

from illume_core.model.config import IllumeConfig
from illume_core.model.text_tokenizer import TextTokenizer
from illume_core.model.unified import IllumeModel

MODEL_FILE = "model.safetensors"
SEMANTIC_FILE = "tokenizer.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
CONFIG_FILE = "config.json"
TEXT_TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


class CheckpointIntegrityError(ValueError):
    """A checkpoint file does not match the digest its manifest recorded."""


class CheckpointFormatError(ValueError):
    """A checkpoint whose files verify but do not fit this version's model shapes."""


class CheckpointMissingFileError(FileNotFoundError):
    """A file a checkpoint needs is absent."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What save_checkpoint wrote: the id (digest of file digests), the folder, the manifest's sha256."""

    id: str
    path: Path
    manifest_digest: str


@dataclass
class LoadedCheckpoint:
    model: IllumeModel
    semantic_tokenizer: Any  # illume_core.model.vision_tokenizer.SemanticTokenizer, or None if none was saved
    text_tokenizer: TextTokenizer
    config: IllumeConfig
    manifest: dict


def save_checkpoint(
    directory: str | Path,
    model: IllumeModel,
    semantic_tokenizer: torch.nn.Module | None,
    text_tokenizer: TextTokenizer,
    *,
    stage: int | str,
    parent: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict | None = None,
) -> CheckpointInfo:
    """Write a checkpoint folder atomically (staged beside it, then renamed); refuses to overwrite."""
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"checkpoint folder {directory} already exists; choose a new path or delete it")
    if text_tokenizer.vocab_size != model.text_vocab_size:
        raise ValueError(
            f"text tokenizer has {text_tokenizer.vocab_size} ids, the model {model.text_vocab_size}; "
            "save the tokenizer the model was built with"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    stage_dir = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_model(model, str(stage_dir / MODEL_FILE), metadata={"format": "illume"})
        if semantic_tokenizer is not None:
            save_model(semantic_tokenizer, str(stage_dir / SEMANTIC_FILE), metadata={"format": "illume"})
        if optimizer is not None:
            tensors, scalars = flatten_optimizer_state(optimizer.state_dict())
            save_file(tensors, str(stage_dir / OPTIMIZER_FILE))
            _write_json(stage_dir / OPTIMIZER_JSON, scalars)
        config = {
            "format_version": FORMAT_VERSION,
            "illume": model.cfg.model_dump(),
            "llm": model.llm.config.to_dict(),
            "text_vocab_size": model.text_vocab_size,
            "stage": stage,
        }
        _write_json(stage_dir / CONFIG_FILE, config)
        text_tokenizer.save(stage_dir / TEXT_TOKENIZER_FILE)
        files = {f.name: _sha256(f) for f in sorted(stage_dir.iterdir())}
        ckpt_id = _files_id(files)
        manifest = {
            "id": ckpt_id,
            "format_version": FORMAT_VERSION,
            "preset": model.cfg.name,
            "stage": stage,
            "parent": parent,
            "created_at": datetime.now(UTC).isoformat(),
            "files": files,
            "extra": extra or {},
        }
        _write_json(stage_dir / MANIFEST_FILE, manifest)
        os.rename(stage_dir, directory)
    except BaseException:
        shutil.rmtree(stage_dir, ignore_errors=True)
        raise
    return CheckpointInfo(ckpt_id, directory, _sha256(directory / MANIFEST_FILE))


def read_manifest(directory: str | Path) -> dict:
    """The manifest of a checkpoint folder (not verified; `verify_checkpoint` checks the files)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointMissingFileError(
            f"{path} is missing: {directory} is not a complete checkpoint folder; "
            "pass a folder written by save_checkpoint, or re-save the checkpoint"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointIntegrityError(f"{path} is not valid JSON ({e}); re-save the checkpoint") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or "id" not in manifest:
        raise CheckpointIntegrityError(
            f"{path} lacks the 'id' and 'files' entries of a checkpoint manifest; re-save the checkpoint"
        )
    return manifest


def verify_checkpoint(directory: str | Path) -> dict:
    """Check every file against the manifest's sha256 and the id against the digests; returns the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    files: dict[str, str] = manifest["files"]
    for required in (MODEL_FILE, CONFIG_FILE, TEXT_TOKENIZER_FILE):
        if required not in files or not (directory / required).is_file():
            what = "text tokenizer" if required == TEXT_TOKENIZER_FILE else "required file"
            raise CheckpointMissingFileError(
                f"{directory / required} ({what}) is missing; the checkpoint is incomplete, re-save it"
            )
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointMissingFileError(
                f"{path} is listed in the manifest but missing; re-save the checkpoint"
            )
        if _sha256(path) != digest:
            raise CheckpointIntegrityError(
                f"{path} does not match its sha256 in {MANIFEST_FILE}: the file was changed or corrupted; "
                "restore it or use another checkpoint"
            )
    if _files_id(files) != manifest["id"]:
        raise CheckpointIntegrityError(
            f"{directory / MANIFEST_FILE}: the id {manifest['id']} is not the digest of the listed files"
        )
    return manifest


# what made older checkpoints stop loading, newest first (named in the refusal)
FORMAT_CHANGES = (
    "the pattern codes' pixel-structured rows (2026-12-03, afternoon)",
    "the tiny preset's 64-token pattern tokenizer (2026-12-03)",
    "the vision encoder's conv stem (late 2026-12-01)",
    "the tokenizer decoder's pattern table (2026-12-01)",
)


def _load_fitting(module: torch.nn.Module, path: Path, device: str | torch.device, what: str) -> None:
    """Load safetensors weights into `module` strictly; weights of other shapes are a CheckpointFormatError."""
    try:
        load_model(module, str(path), strict=True, device=str(device))
    except RuntimeError as e:  # missing, unexpected or reshaped tensors
        raise CheckpointFormatError(
            f"{path} does not fit this version's {what} ({str(e).splitlines()[0]}); it was written by an "
            f"older illume (checkpoints from before {' or '.join(FORMAT_CHANGES)} do not load): "
            "train a new base model with `illume train`"
        ) from e


def refuse_renamed_preset(illume: dict, where: str | Path) -> None:
    """Refuse a checkpoint of the tiny preset from before it drew 64 pattern codes.

    Until 2026-12-03 the preset named tiny drew 256 semantic codes (that preset is now tiny-256);
    rounds read the preset by name, so a lake trained then cannot go on under the new meaning.
    """
    if illume.get("name") == "tiny" and "tokenizer" not in illume:
        raise CheckpointFormatError(
            f"{where} was trained with the old tiny preset (256 image tokens, semantic tokenizer), "
            "which is now called tiny-256; the tiny preset draws 64 pattern codes. Train a new "
            "base model with `illume train` (or `illume demo`) on a fresh lake"
        )


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Verify and load a checkpoint onto `device` (model in eval mode)."""
    directory = Path(directory)
    manifest = verify_checkpoint(directory)
    config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    refuse_renamed_preset(config["illume"], directory)
    # checkpoints written before the adapter could merge cells had one LLM position per cell
    cfg = IllumeConfig(**{"adapter_pool": 1, **config["illume"]})
    text_tokenizer = TextTokenizer.from_file(directory / TEXT_TOKENIZER_FILE)
    if text_tokenizer.vocab_size != config["text_vocab_size"]:
        raise CheckpointIntegrityError(
            f"{directory / TEXT_TOKENIZER_FILE} has {text_tokenizer.vocab_size} ids, config.json says "
            f"{config['text_vocab_size']}"
        )
    # the saved LLM config rebuilds the exact LLM, so no pretrained weights are read again
    model = IllumeModel(cfg, config["text_vocab_size"], llm_config=LlamaConfig.from_dict(config["llm"]))
    _load_fitting(model, directory / MODEL_FILE, device, "model")
    model.to(device).eval()
    semantic = None
    if SEMANTIC_FILE in manifest["files"]:
        from illume_core.model.vision_tokenizer import make_tokenizer

        semantic = make_tokenizer(cfg)
        _load_fitting(semantic, directory / SEMANTIC_FILE, device, "semantic tokenizer")
        semantic.to(device).eval()
    return LoadedCheckpoint(model, semantic, text_tokenizer, cfg, manifest)


def load_optimizer_state(directory: str | Path) -> dict | None:
    """The optimizer state_dict saved with a checkpoint (for optimizer.load_state_dict), or None."""
    directory = Path(directory)
    manifest = verify_checkpoint(directory)
    if OPTIMIZER_FILE not in manifest["files"]:
        return None
    scalars = json.loads((directory / OPTIMIZER_JSON).read_text(encoding="utf-8"))
    return unflatten_optimizer_state(load_file(str(directory / OPTIMIZER_FILE)), scalars)


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict -> (tensors named 'state.<param>.<key>', JSON-able everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    scalar_state: dict[str, dict[str, Any]] = {}
    for pid, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalar_state.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalar_state": scalar_state}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], scalars: dict) -> dict:
    """The inverse of flatten_optimizer_state."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in scalars["scalar_state"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": scalars["param_groups"]}


def _files_id(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default), encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable in a checkpoint")
