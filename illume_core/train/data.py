"""Training data: a finite, fixed ShapesWorld base corpus and the mixed batch stream of a stage.

Like ILLUME, the setting is data-scarce: `BaseCorpus` draws a fixed number of scenes and
text-to-image pairs from a seed, the same for every experiment arm, and each stage samples
batches from it by its recipe's mix. Round data (the self-enhancement examples, from the lake)
joins as the `self` kind. Target images become codes through the frozen semantic tokenizer,
cached per scene, so a pair is encoded once however often it is drawn.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from illume_core.model.config import IllumeConfig
from illume_core.model.images import to_tensor
from illume_core.model.processor import Batch, Example, Processor
from illume_core.settings import CorpusSpec
from illume_core.train.recipes import StageRecipe
from illume_core.world import corpus
from illume_core.world.geneval import TAGS, Metadata
from illume_core.world.prompts import Holdout, generate_prompts, scene_for
from illume_core.world.scenes import Scene, render, sample_scene


class BaseCorpus:
    """The fixed base corpus: deterministic in (spec, image size, generation cell)."""

    def __init__(self, cfg: IllumeConfig, spec: CorpusSpec = CorpusSpec()) -> None:
        self.cfg, self.spec = cfg, spec
        self.holdout = Holdout.parse(list(spec.holdout)) if spec.holdout is not None else Holdout.default()
        rng = random.Random(f"corpus/{spec.seed}")
        size = cfg.image_size
        # the same number of pairs per tag unless weighted; small tags repeat their prompts with new scenes
        if spec.t2i_tag_weights is None:
            drawn = generate_prompts(
                spec.seed, per_tag=-(-spec.n_t2i // 6), holdout=self.holdout, split="train"
            )
        else:  # each tag's draw is a prefix of its unweighted draw, so weights only change how far it goes
            want = spec.t2i_per_tag()
            pool = generate_prompts(
                spec.seed, per_tag=max(want.values()), holdout=self.holdout, split="train"
            )
            drawn = [m for tag in TAGS for m in [p for p in pool if p.tag == tag][: want[tag]]]
        order_cell = cfg.gen_cell if spec.reading_order else None
        self.t2i: list[tuple[Metadata, Scene]] = [
            (m, scene_for(m, rng, size, distractors=m.tag in spec.distractors, order_cell=order_cell))
            for m in drawn
        ][: spec.n_t2i]
        rng.shuffle(self.t2i)
        self.prompts: list[Metadata] = list({m.prompt: m for m, _ in self.t2i}.values())
        self.scenes: list[Scene] = [sample_scene(rng, size) for _ in range(spec.n_scenes)]
        self.assess: list[corpus.AssessmentExample] = [
            corpus.assessment_example(rng, size, holdout=self.holdout, split="train")
            for _ in range(spec.n_assess)
        ]
        self._codes: dict[tuple[str, int], torch.Tensor] = {}

    def describe(self) -> dict:
        out = {
            "seed": self.spec.seed,
            "t2i_pairs": len(self.t2i),
            "distinct_t2i_prompts": len(self.prompts),
            "scenes": len(self.scenes),
            "assessment_examples": len(self.assess),
            "holdout": self.holdout.specs(),
        }
        if self.spec.t2i_tag_weights is not None:
            out["t2i_per_tag"] = self.spec.t2i_per_tag()
        out["reading_order"], out["distractors"] = self.spec.reading_order, list(self.spec.distractors)
        return out


@dataclass
class SelfExample:
    """One self-enhancement training example, resolved from an sft_examples row."""

    conversation: list[dict]  # turns {role, content}; "<image:i>" marks image i of `images`
    images: list[Image.Image] = field(default_factory=list)  # the referenced samples, decoded
    codes: list[torch.Tensor] = field(default_factory=list)  # their image codes (N,)


def conversation_example(processor: Processor, ex: SelfExample) -> Example:
    """Turn a stored conversation into one training example.

    User turns holding "<image:i>" show image i (continuous input); an assistant turn that is
    exactly "<image:i>" draws image i as codes; other assistant turns are text targets. Turns
    are built with the processor's templates and concatenated, so templates stay in one place.
    """
    parts: list[Example] = []
    turns = ex.conversation
    if len(turns) % 2:
        raise ValueError("a conversation alternates user and assistant turns; this one has an odd count")
    for user, assistant in zip(turns[0::2], turns[1::2], strict=True):
        question, answer = user["content"], assistant["content"]
        shown = [int(t.split(":")[1].rstrip(">")) for t in _image_refs(question)]
        text = _strip_refs(question)
        drawn = _image_refs(answer)
        if drawn:
            codes = ex.codes[int(drawn[0].split(":")[1].rstrip(">"))]
            if shown:
                parts.append(processor.edit(ex.images[shown[0]], text, codes))
            else:
                parts.append(processor.text_to_image(text, codes))
        elif shown:
            parts.append(processor.vqa(ex.images[shown[0]], text, answer))
        else:
            parts.append(processor.text(f"{text} {answer}"))
    if len(parts) == 1:
        return parts[0]
    # later turns continue the same sequence: drop their leading <bos>
    ids, labels, images = list(parts[0].ids), list(parts[0].labels), list(parts[0].images)
    for p in parts[1:]:
        if len(ids) + len(p.ids) - 1 > processor.cfg.max_seq_len:
            break  # a turn that does not fit is left out rather than truncated mid-image
        ids += p.ids[1:]
        labels += p.labels[1:]
        images += p.images
    return Example(ids, labels, images)


def _image_refs(text: str) -> list[str]:
    return re.findall(r"<image:\d+>", text)


def _strip_refs(text: str) -> str:
    return " ".join(re.sub(r"<image:\d+>", " ", text).split())


class StageData:
    """An endless, seeded stream of training batches for one recipe's mix."""

    def __init__(
        self,
        base: BaseCorpus,
        processor: Processor,
        encode: Callable[[torch.Tensor], torch.Tensor],
        recipe: StageRecipe,
        seed: int = 0,
        self_examples: Sequence[SelfExample] = (),
        device: torch.device | str = "cpu",
        one_kind_per_batch: bool = True,
    ) -> None:
        self.base, self.processor, self.encode, self.recipe = base, processor, encode, recipe
        self.one_kind_per_batch = one_kind_per_batch
        self.self_examples = list(self_examples)
        mix = {k: w for k, w in recipe.mix.items() if w > 0 and (k != "self" or self.self_examples)}
        if not mix:
            raise ValueError(
                f"recipe {recipe.name!r} has no data to draw: its mix is empty or only 'self' without examples"
            )
        self.kinds, self.weights = list(mix), list(mix.values())
        self.seed = seed
        self.index = 0  # batches drawn so far; batch i depends only on (recipe, seed, i)
        self.device = torch.device(device)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def skip(self, n: int) -> StageData:
        """Continue as if n batches had been drawn (resuming a run gives the same batches)."""
        self.index += n
        return self

    def __next__(self) -> Batch:
        self.rng = random.Random(f"stage/{self.recipe.name}/{self.seed}/{self.index}")
        self.index += 1
        # one kind per batch: kinds differ 5x in length (text ~20 tokens, editing ~140), and a
        # mixed batch is padded to its longest member, so about a third of it was padding
        # (benchmarks/train_efficiency.py measures both ways)
        if self.one_kind_per_batch:
            kinds = self.rng.choices(self.kinds, self.weights, k=1) * self.recipe.batch_size
        else:
            kinds = self.rng.choices(self.kinds, self.weights, k=self.recipe.batch_size)
        examples = [self._example(k) for k in kinds]
        batch = self.processor.collate(examples, "right").to(self.device)
        batch.num_tokens = int(batch.attention_mask.sum())  # for throughput figures
        return batch

    # ---- one example of each kind ------------------------------------------------------------
    def _codes(self, key: tuple[str, int] | None, scene: Scene) -> torch.Tensor:
        """The scene's image codes (N,); corpus scenes are cached, one-off scenes (key None) not."""
        if key is not None and key in self.base._codes:
            return self.base._codes[key]
        with torch.no_grad():
            pixels = to_tensor([render(scene)]).to(self.device)  # (1, 3, H, W)
            codes = self.encode(pixels)[0].cpu()  # (N,)
        if key is not None:
            self.base._codes[key] = codes
        return codes

    def _example(self, kind: str) -> Example:
        rng, p, b = self.rng, self.processor, self.base
        if kind == "t2i":
            i = rng.randrange(len(b.t2i))
            meta, scene = b.t2i[i]
            return p.text_to_image(
                meta.prompt, self._codes(("t2i", i), scene), rng=rng, drop_prob=self.recipe.cond_drop
            )
        if kind == "self":
            return conversation_example(p, rng.choice(self.self_examples))
        if kind == "assess":
            a = rng.choice(b.assess)
            return p.assessment(render(a.scene), a.meta.prompt, a.assessment)
        i = rng.randrange(len(b.scenes))
        scene = b.scenes[i]
        if kind == "caption":
            return p.caption(render(scene), corpus.caption(scene, rng))
        if kind == "reconstruct":
            return p.reconstruction(render(scene), self._codes(("scene", i), scene))
        if kind == "vqa":
            qa = rng.choice(corpus.vqa_pairs(scene, rng))
            return p.vqa(render(scene), qa.question, qa.answer)
        if kind == "edit":
            try:
                e = corpus.edit_pair(scene, rng, scene.size)
            except RuntimeError:  # no edit applies to this scene (e.g. four identical objects)
                e = corpus.edit_pair(None, rng, scene.size)
            return p.edit(render(e.source), e.instruction, self._codes(None, e.target))
        if kind == "text":
            qa = rng.choice(corpus.vqa_pairs(scene, rng))
            return p.text(rng.choice([corpus.caption(scene, rng), f"{qa.question} {qa.answer}"]))
        raise ValueError(f"unknown data kind {kind!r}")
