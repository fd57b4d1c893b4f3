"""Sampling as small pure functions (LlamaGen style): prefill, decode_one_token, decode_n_tokens.

Text-to-image runs a stacked [cond; uncond] batch for classifier-free guidance, with a KV cache
allocated once for the whole sequence (a transformers StaticCache), filled by `prefill` and
written in place by each `decode_one_token`; logits inside the
image span are restricted to the image codes, so exactly cfg.image_tokens codes come out. Every
sample draws from its own torch.Generator, so a seed gives the same image whatever else is in
the batch. `no_cache=True` recomputes the whole prefix each step (parity tests, benchmark).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import StaticCache

from illume_core.model.processor import Batch, ImageLike, Processor
from illume_core.model.unified import IllumeModel
from illume_core.self_enhance.constrained import AssessmentGrammar


class SamplingParams(BaseModel):
    """How tokens are drawn: guidance, temperature, top-k and top-p, as one object.

    cfg_scale: classifier-free guidance of image codes against the unconditional prompt (None: no
    guidance; 1.0 equals none). temperature 0 is greedy. top_k None and top_p 1.0 cut nothing.
    nucleus "code" cuts the tail of the whole code distribution; "mask" (factorized pattern codes
    only) cuts the tail of the cell's shapes, summed over colours, and then the tail of the chosen
    shape's colours, so a prompt that names no colour does not lose its objects to the cut.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cfg_scale: float | None = Field(2.0, ge=0.0)
    temperature: float = Field(1.0, ge=0.0)
    top_k: int | None = Field(None, ge=1)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    nucleus: Literal["code", "mask"] = "code"

    @property
    def setting(self) -> str:
        """The short form `parse_setting` reads: 'cfg:temperature:top_k[:top_p[:m]]'."""
        cfg = 1.0 if self.cfg_scale is None else self.cfg_scale  # guidance 1 equals none
        text = f"{cfg:g}:{self.temperature:g}:{self.top_k or 0}"
        if self.top_p < 1.0 or self.nucleus == "mask":
            text += f":{self.top_p:g}" + (":m" if self.nucleus == "mask" else "")
        return text


def parse_setting(text: str) -> SamplingParams:
    """'cfg:temperature:top_k[:top_p[:m]]' -> SamplingParams; ValueError names the format.

    top_k 0 = none; temperature 0 = greedy; top_p 1 when left out; a trailing `m` is the mask
    nucleus (`SamplingParams.nucleus="mask"`).
    """
    parts = text.split(":")
    form = "cfg:temperature:top_k[:top_p[:m]], e.g. 2:0.7:0, 3:1:0:0.8 or 2:1:0:0.7:m"
    if len(parts) not in (3, 4, 5) or (len(parts) == 5 and parts[4] != "m"):
        raise ValueError(f"setting {text!r}: expected {form}")
    try:
        cfg, temp, k = float(parts[0]), float(parts[1]), int(parts[2])
        top_p = float(parts[3]) if len(parts) >= 4 else 1.0
    except ValueError:
        raise ValueError(f"setting {text!r}: expected numbers in {form}") from None
    if cfg < 0 or temp < 0 or k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"setting {text!r}: cfg, temperature and top_k must be >= 0, top_p in (0, 1]")
    nucleus = "mask" if len(parts) == 5 else "code"
    return SamplingParams(cfg_scale=cfg, temperature=temp, top_k=k or None, top_p=top_p, nucleus=nucleus)


# text-to-image: ILLUME's CFG 2.0 and temperature 1.0, with a top-p of 0.7 chosen on tuning prompts
# (benchmarks/sampling_sweep.py on run 8's two base models: 0.710 / 0.692 against 0.598 / 0.554
# without it). Without the cut, the tail of each cell's distribution adds objects nobody asked
# for: 1.6 per image, most in the prompt's own shapes and colours (docs/BASE_MODEL.md, section 17)
IMAGE_SAMPLING = SamplingParams(top_p=0.7)
# the settings a base model's sampling is chosen from after its training, on tuning prompts
# (illume_core/eval/calibration.py; the train pipeline's calibrate-sampling task), IMAGE_SAMPLING
# first: it wins ties. A weak model loses its objects to the top-p 0.7 cut (background holds more
# than 0.7 of most cells), a strong one draws objects nobody asked for without it
# (docs/BASE_MODEL.md, sections 17-19). A weak model also draws better with stronger guidance: the
# demo's base judges 0.267 on tuning prompts without a cut at CFG 2 and 0.375-0.383 at CFG 4 or at
# CFG 3 with temperature 0.9; it chose CFG 4 with the 0.9 mask nucleus and its ShapesEval rose from
# 0.346 to 0.388 (held-out 0.238 -> 0.350). Run 9's strong base loses 0.07-0.14 under them on
# tuning prompts and keeps the default (section 20). Each candidate costs about 15 s
SAMPLING_CANDIDATES: tuple[SamplingParams, ...] = (
    IMAGE_SAMPLING,
    SamplingParams(top_p=0.8, nucleus="mask"),
    SamplingParams(top_p=0.9, nucleus="mask"),
    SamplingParams(),
    SamplingParams(cfg_scale=4.0),
    SamplingParams(cfg_scale=4.0, top_p=0.9, nucleus="mask"),
    SamplingParams(cfg_scale=3.0, temperature=0.9),
)
EDIT_SAMPLING = SamplingParams(cfg_scale=None)  # an edit follows its input image, unguided
ANSWER_SAMPLING = SamplingParams(cfg_scale=None, temperature=0.0)  # text answers: greedy


@dataclass
class Prefix:
    """What the model has read so far, per row: the KV cache, or (no_cache) the raw embeddings."""

    attention_mask: torch.Tensor  # (B, T) long
    position_ids: torch.Tensor  # (B, T) long
    cache: StaticCache | None  # allocated and filled by prefill, written in place by decode_one_token
    embeds: torch.Tensor | None  # (B, T, D), kept only without a cache


def _nucleus(logits: torch.Tensor, top_p: float, head: int = 256) -> torch.Tensor:
    """Logits (B, V) with every token dropped (-inf) whose higher-ranked tokens already hold
    `top_p` of the probability. The nucleus is nearly always among the `head` likeliest tokens, so
    they are ranked first (a top-k, not a sort of the whole vocabulary: 16,380 image codes); a row
    whose nucleus reaches past them is ranked in full. Either way a row keeps the tokens a full
    ranking of its own probabilities keeps, whatever the other rows of the batch are."""
    probs = logits.softmax(-1)  # (B, V)
    keep = torch.zeros_like(probs, dtype=torch.bool)  # (B, V)
    ranked, order = probs.topk(min(head, logits.shape[-1]), dim=-1)  # (B, k), descending
    cum = ranked.cumsum(-1)  # (B, k)
    inside = cum[:, -1] > top_p  # (B,): the row's nucleus ends within its head
    keep[inside] = keep[inside].scatter(-1, order[inside], (cum - ranked)[inside] <= top_p)
    if not bool(inside.all()):  # the other rows, ranked in full
        ranked, order = probs[~inside].sort(-1, descending=True)  # (b, V)
        keep[~inside] = keep[~inside].scatter(-1, order, (ranked.cumsum(-1) - ranked) <= top_p)
    return logits.masked_fill(~keep, float("-inf"))


def _mask_nucleus(
    logits: torch.Tensor, generators: Sequence[torch.Generator], top_p: float, colours: int
) -> torch.Tensor:
    """A factorized pattern code per row from joint logits (B, M * C), code = mask * C + colour:
    the mask from the nucleus of the masks' marginals (colours summed), then the colour from the
    nucleus of that mask's colours. (B,) long."""
    lp = logits.log_softmax(-1).unflatten(-1, (-1, colours))  # (B, M, C)
    masks = _nucleus(lp.logsumexp(-1), top_p).softmax(-1)  # (B, M)
    m = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(masks, generators, strict=True)])
    cols = _nucleus(lp[torch.arange(len(m)), m], top_p).softmax(-1)  # (B, C): every row's cut at once
    c = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(cols, generators, strict=True)])
    return m * colours + c


def sample_logits(
    logits: torch.Tensor,
    generators: Sequence[torch.Generator] | None,
    params: SamplingParams = IMAGE_SAMPLING,
    colours: int | None = None,
) -> torch.Tensor:
    """One token per row from logits (B, V): greedy when params.temperature == 0, else top-k /
    top-p sampling with row i drawing from generators[i] (params.cfg_scale is the caller's).
    `colours`: the logits are factorized pattern codes with that many colours (params.nucleus
    "mask" needs them). Returns (B,) long."""
    temperature, top_k, top_p = params.temperature, params.top_k, params.top_p
    if temperature == 0:
        return logits.argmax(-1)  # (B,)
    if generators is None or len(generators) != logits.shape[0]:
        raise ValueError("sampling with temperature > 0 needs one torch.Generator per row")
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0 and params.nucleus == "mask" and colours:
        return _mask_nucleus(logits, generators, top_p, colours)
    if top_p < 1.0:
        logits = _nucleus(logits, top_p)
    probs = logits.softmax(-1)  # (B, V)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)])


@torch.no_grad()
def prefill(
    model: IllumeModel, batch: Batch, max_new_tokens: int, no_cache: bool = False
) -> tuple[Prefix, torch.Tensor]:
    """Read a left-padded prompt batch, leaving cache room for `max_new_tokens` more tokens;
    returns the prefix state and the last hidden state (B, D)."""
    embeds = model.prepare_inputs_embeds(batch.input_ids, batch.pixel_values, batch.image_mask)  # (B, T, D)
    length = batch.input_ids.shape[1] + max_new_tokens
    cache = None if no_cache else StaticCache(config=model.llm.config, max_cache_len=length)
    hidden = model.hidden_states(embeds, batch.attention_mask, batch.position_ids, cache)  # (B, T, D)
    prefix = Prefix(batch.attention_mask, batch.position_ids, cache, embeds if no_cache else None)
    return prefix, hidden[:, -1]


@torch.no_grad()
def decode_one_token(model: IllumeModel, prefix: Prefix, token_ids: torch.Tensor) -> torch.Tensor:
    """Append one token per row (B,) to the prefix; returns its hidden state (B, D)."""
    new = model.embed_ids(token_ids[:, None])  # (B, 1, D)
    pos = prefix.position_ids[:, -1:] + 1  # (B, 1)
    prefix.attention_mask = torch.cat([prefix.attention_mask, torch.ones_like(pos)], 1)  # (B, T+1)
    prefix.position_ids = torch.cat([prefix.position_ids, pos], 1)  # (B, T+1)
    if prefix.cache is not None:
        hidden = model.hidden_states(new, prefix.attention_mask, pos, prefix.cache)  # (B, 1, D)
    else:
        prefix.embeds = torch.cat([prefix.embeds, new], 1)  # (B, T+1, D)
        hidden = model.hidden_states(prefix.embeds, prefix.attention_mask, prefix.position_ids)  # (B, T+1, D)
    return hidden[:, -1]


@torch.no_grad()
def decode_n_tokens(
    model: IllumeModel,
    prefix: Prefix,
    hidden: torch.Tensor,
    n: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
    stop: Callable[[torch.Tensor], bool] | None = None,
) -> torch.Tensor:
    """Pick and feed `n` tokens: `pick` maps the last hidden (B, D) to LLM ids (B,) fed back in;
    `stop(tokens so far)` ends early. Returns the picked ids (B, n') with n' <= n."""
    out: list[torch.Tensor] = []
    for t in range(n):
        ids = pick(hidden)  # (B,)
        out.append(ids)
        if t == n - 1 or (stop is not None and stop(torch.stack(out, 1))):
            break
        hidden = decode_one_token(model, prefix, ids)  # (B, D)
    return torch.stack(out, 1)  # (B, n')


@torch.no_grad()
def sample_image_codes(
    model: IllumeModel,
    batch: Batch,
    generators: Sequence[torch.Generator] | None,
    params: SamplingParams = IMAGE_SAMPLING,
    no_cache: bool = False,
) -> torch.Tensor:
    """Image codes (B, N) continuing prompts that end in <soi>. With `params.cfg_scale`, the batch
    is [cond (B); uncond (B)] and both halves are fed the same guided sample; None: no guidance."""
    prefix, hidden = prefill(model, batch, model.cfg.image_tokens, no_cache)
    offset = model.image_token_offset
    cfg_scale = params.cfg_scale
    colours = model.gen_codes.colours if model.factorized else None

    def pick(h: torch.Tensor) -> torch.Tensor:
        logits = model.image_logits(h)  # (B or 2B, K): only image codes inside the image span
        if cfg_scale is not None:
            cond, uncond = logits.chunk(2)  # (B, K) each
            logits = uncond + cfg_scale * (cond - uncond)  # (B, K)
        codes = sample_logits(logits, generators, params, colours)  # (B,)
        ids = codes + offset  # (B,)
        return torch.cat([ids, ids]) if cfg_scale is not None else ids  # (B or 2B,)

    ids = decode_n_tokens(model, prefix, hidden, model.cfg.image_tokens, pick)  # (B or 2B, N)
    return ids[: len(ids) // 2 if cfg_scale is not None else len(ids)] - offset  # (B, N)


def generate_images(
    model: IllumeModel,
    processor: Processor,
    prompts: Sequence[str],
    seeds: Sequence[int],
    params: SamplingParams = IMAGE_SAMPLING,
    no_cache: bool = False,
) -> torch.Tensor:
    """Text-to-image: code ids (B, N) in [0, codebook_size), one seed per prompt (decode them with
    SemanticTokenizer.decode). The unconditional twin is the generic "generate a random image"."""
    _check_seeds(prompts, seeds)
    examples = [processor.t2i_prompt(p) for p in prompts]
    if params.cfg_scale is not None:
        examples += [processor.t2i_prompt(None)] * len(prompts)
    return _run_images(model, processor, examples, seeds, params, no_cache)


def edit_images(
    model: IllumeModel,
    processor: Processor,
    images: Sequence[ImageLike],
    instructions: Sequence[str],
    seeds: Sequence[int],
    params: SamplingParams = EDIT_SAMPLING,
    no_cache: bool = False,
) -> torch.Tensor:
    """Editing: image in (continuous) + instruction -> the edited image's codes (B, N). With
    `params.cfg_scale`, guidance is against the unconditional text-to-image prompt (no image, no
    text)."""
    if len(images) != len(instructions):
        raise ValueError(f"{len(images)} images but {len(instructions)} instructions; give one each")
    _check_seeds(instructions, seeds)
    examples = [processor.edit_prompt(im, ins) for im, ins in zip(images, instructions, strict=True)]
    if params.cfg_scale is not None:
        examples += [processor.t2i_prompt(None)] * len(images)
    return _run_images(model, processor, examples, seeds, params, no_cache)


@torch.no_grad()
def answer(
    model: IllumeModel,
    processor: Processor,
    images: Sequence[ImageLike | None],
    questions: Sequence[str],
    max_new_tokens: int = 48,
    params: SamplingParams = ANSWER_SAMPLING,
    seeds: Sequence[int] | None = None,
    no_cache: bool = False,
    grammar: AssessmentGrammar | None = None,
) -> list[str]:
    """Text answers about images (None: a text-only question), greedy by default, each stopping
    at <eos>; logits are restricted to text ids, and with a `grammar` to the ids it allows next."""
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions; give one each")
    model.eval()
    device = _device(model)
    batch = processor.collate(
        [processor.question_prompt(im, q) for im, q in zip(images, questions, strict=True)], "left"
    )
    generators = None
    if params.temperature > 0:
        seeds = list(range(len(questions))) if seeds is None else seeds
        _check_seeds(questions, seeds)
        generators = _generators(seeds, device)
    eos = processor.tokenizer.eos_id
    prefix, hidden = prefill(model, batch.to(device), max_new_tokens, no_cache)
    states = [grammar.start() for _ in questions] if grammar is not None else []
    step = [0]

    def pick(h: torch.Tensor) -> torch.Tensor:
        logits = model.text_logits(h)  # (B, Vt)
        if grammar is None:
            return sample_logits(logits, generators, params)  # (B,)
        allowed = grammar.mask(states, remaining=max_new_tokens - step[0])  # (B, Vt)
        step[0] += 1
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))  # (B, Vt)
        ids = sample_logits(logits, generators, params)  # (B,)
        states[:] = [grammar.advance(s, t) for s, t in zip(states, ids.tolist(), strict=True)]
        return ids

    def stop(tokens: torch.Tensor) -> bool:
        return bool((tokens == eos).any(1).all())

    tokens = decode_n_tokens(model, prefix, hidden, max_new_tokens, pick, stop).tolist()  # (B, n)
    return [processor.tokenizer.decode(row[: row.index(eos)] if eos in row else row) for row in tokens]


def _run_images(
    model: IllumeModel,
    processor: Processor,
    examples: list,
    seeds: Sequence[int],
    params: SamplingParams,
    no_cache: bool,
) -> torch.Tensor:
    model.eval()
    device = _device(model)
    batch = processor.collate(examples, padding_side="left").to(device)
    generators = _generators(seeds, device) if params.temperature > 0 else None
    return sample_image_codes(model, batch, generators, params, no_cache)


def _generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _device(model: IllumeModel) -> torch.device:
    return next(model.parameters()).device


def _check_seeds(items: Sequence, seeds: Sequence[int]) -> None:
    if len(seeds) != len(items):
        raise ValueError(f"{len(items)} prompts but {len(seeds)} seeds; give one seed per sample")
