"""Model commands: `illume generate`, `illume ask`, `illume edit` on a checkpoint.

Without --checkpoint they use the lake's current checkpoint (`require_current_checkpoint`). Torch and
the model load inside the commands, so `illume --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from storage.registry import CURRENT_POINTER  # text file in the lake: path of the promoted checkpoint


class NoCheckpointError(FileNotFoundError):
    """The lake has no current checkpoint to load."""


def require_current_checkpoint(lake_root: str | Path) -> Path:
    """The lake's current (last promoted) checkpoint folder (see storage.registry.current_checkpoint)."""
    from storage.registry import current_checkpoint as pointer

    target = pointer(str(lake_root))
    if target is None:
        raise NoCheckpointError(
            f"no current checkpoint in the lake at {lake_root} ({lake_root}/{CURRENT_POINTER} is missing); "
            "run `illume demo` to train one, or pass --checkpoint DIR"
        )
    from storage.blobs import local_checkpoint  # a bucket lake's: downloaded once to this machine

    target = local_checkpoint(target)
    if not Path(target).is_dir():
        raise NoCheckpointError(
            f"the lake's current checkpoint {target} is not a folder; pass --checkpoint DIR"
        )
    return Path(target)


def _lake_root(value: str) -> str:
    from flows.commands_pipeline import lake_root  # refuses other URIs, never rewrites one into a path

    return lake_root(value)


def _load(checkpoint: str | None, lake: str):
    import torch

    from illume_core.model.checkpoint import CheckpointIntegrityError, load_checkpoint
    from illume_core.model.processor import Processor

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    from storage.blobs import CheckpointDownloadError, local_checkpoint  # s3://: downloaded once

    try:
        folder = local_checkpoint(checkpoint) if checkpoint else require_current_checkpoint(lake)
        loaded = load_checkpoint(folder, device=device)
    except (CheckpointIntegrityError, CheckpointDownloadError, FileNotFoundError) as e:
        # a tampered, incomplete or absent checkpoint: the message names the file and what to do
        raise typer.BadParameter(str(e), param_hint="--checkpoint") from None
    if loaded.semantic_tokenizer is None:
        raise typer.BadParameter(
            "this checkpoint has no semantic tokenizer (tokenizer.safetensors) to draw images"
        )
    return loaded, Processor(loaded.config, loaded.text_tokenizer)


def _out_paths(out: Path, n: int) -> list[Path]:
    return [out] if n == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def _save_codes(loaded, codes, out: Path) -> list[Path]:
    import torch

    from illume_core.model.images import to_pil

    with torch.no_grad():
        pixels = loaded.semantic_tokenizer.decode(codes)  # (B, 3, H, W)
    paths = _out_paths(out, len(codes))
    out.parent.mkdir(parents=True, exist_ok=True)
    for img, path in zip(to_pil(pixels), paths, strict=True):
        img.save(path)
    return paths


def _read_image(path: Path, size: int):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise typer.BadParameter(f"no image at {path}")
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise typer.BadParameter(
            f"cannot read image {path} ({e}); re-save it as a PNG", param_hint="IMAGE"
        ) from None
    return img if img.size == (size, size) else img.resize((size, size), Image.Resampling.NEAREST)


# the options every model command shares: which checkpoint, found how
CHECKPOINT = typer.Option(
    None, "--checkpoint", help="checkpoint folder or s3:// URI (default: the lake's current)"
)
MODEL_LAKE = typer.Option("lake", "--lake", help="lake root holding checkpoints/current", callback=_lake_root)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `illume` app."""

    @app.command()
    def generate(
        prompt: str = typer.Argument(..., help="what to draw, e.g. 'a photo of two red circles'"),
        out: Path = typer.Option(Path("out.png"), "-o", "--out", help="PNG path; with -n > 1, out_0.png ..."),
        checkpoint: str | None = CHECKPOINT,
        lake: str = MODEL_LAKE,
        cfg: float = typer.Option(2.0, "--cfg", help="classifier-free guidance scale (1: none)"),
        seed: int = typer.Option(0, "--seed", help="seed of the first image; image i uses seed + i"),
        n: int = typer.Option(1, "-n", min=1, help="number of images"),
        temperature: float = typer.Option(1.0, "--temperature", min=0.0),
        top_k: int | None = typer.Option(None, "--top-k", min=1),
        top_p: float = typer.Option(
            0.7,
            "--top-p",
            min=0.0,
            max=1.0,
            help="nucleus cut (1: none; a lake's drawings use the setting chosen for its base model, see `illume calibrate`)",
        ),
        best_of: int = typer.Option(
            1,
            "--best-of",
            min=1,
            help="draw this many candidates per image and keep the one the model itself judges best "
            "(likelihood against one-dimension counterfactual prompts; ShapesWorld prompts only)",
        ),
    ) -> None:
        """Draw images for a prompt (same seed, same images)."""
        from illume_core.model.sampling import SamplingParams, generate_images
        from illume_core.self_enhance.likelihood import metadata_for, pick_best

        if top_p <= 0.0:
            raise typer.BadParameter("top-p must be above 0 (1: no cut)", param_hint="--top-p")
        meta = None
        if best_of > 1:
            try:
                meta = metadata_for(prompt)
            except ValueError as e:
                raise typer.BadParameter(str(e), param_hint="--best-of") from None
        loaded, proc = _load(checkpoint, lake)
        params = SamplingParams(
            cfg_scale=cfg if cfg != 1.0 else None, temperature=temperature, top_k=top_k, top_p=top_p
        )
        # candidate j of image i uses seed + i * best_of + j (best_of 1: seed + i, as before)
        seeds = [seed + k for k in range(n * best_of)]
        codes = generate_images(loaded.model, proc, [prompt] * len(seeds), seeds, params)
        if meta is not None:
            import torch

            groups = codes.view(n, best_of, -1)
            codes = torch.stack([g[pick_best(loaded.model, proc, meta, g)] for g in groups])
        for p in _save_codes(loaded, codes, out):
            typer.echo(str(p))

    @app.command()
    def ask(
        image: Path = typer.Argument(..., help="PNG to ask about"),
        question: str = typer.Argument(..., help="e.g. 'how many circles are there?'"),
        checkpoint: str | None = CHECKPOINT,
        lake: str = MODEL_LAKE,
        max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1),
    ) -> None:
        """Answer a question about an image (greedy)."""
        from illume_core.model.sampling import answer

        loaded, proc = _load(checkpoint, lake)
        img = _read_image(image, loaded.config.image_size)
        typer.echo(answer(loaded.model, proc, [img], [question], max_new_tokens)[0])

    @app.command()
    def edit(
        image: Path = typer.Argument(..., help="PNG to edit"),
        instruction: str = typer.Argument(..., help="e.g. 'remove the blue square'"),
        out: Path = typer.Option(Path("out.png"), "-o", "--out", help="PNG path of the edited image"),
        checkpoint: str | None = CHECKPOINT,
        lake: str = MODEL_LAKE,
        seed: int = typer.Option(0, "--seed"),
        temperature: float = typer.Option(1.0, "--temperature", min=0.0),
    ) -> None:
        """Edit an image by an instruction (image in, image out)."""
        from illume_core.model.sampling import EDIT_SAMPLING, edit_images

        loaded, proc = _load(checkpoint, lake)
        img = _read_image(image, loaded.config.image_size)
        params = EDIT_SAMPLING.model_copy(update={"temperature": temperature})
        codes = edit_images(loaded.model, proc, [img], [instruction], [seed], params)
        for p in _save_codes(loaded, codes, out):
            typer.echo(str(p))
