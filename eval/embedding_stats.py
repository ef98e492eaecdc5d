"""Embedding geometry on a retrieval set: the modality gap (Liang et al., 2022, "Mind the Gap"), and alignment and
uniformity (Wang and Isola, 2020, "Understanding Contrastive Representation Learning through Alignment and
Uniformity on the Hypersphere").

Everything is measured on the vectors the model scores pairs with (`pair_embeddings`, L2-normalised), one pair
per caption c: x_c for the image of c and y_c for c. For dot-product models x_c is that image's embedding. For
Llip it is the image's mixture as caption c conditions it (z / |z| of losses/llip_similarity.py), so each caption
of an image gives that image its own vector.

    modality_gap     = | mean_c x_c - mean_c y_c |
    matching_cosine  = mean_c <x_c, y_c>
    random_cosine    = mean_c <x'_c, y'_c>, the pair vectors of caption c with a partner image instead of its own
                       (`partner_images`: every image the next one in a seeded random cycle through all of them)
    alignment        = mean_c |x_c - y_c|^2                                              (alpha = 2)
    image_uniformity = log mean over ordered pairs (c, c') of different images of exp(-2 |x_c - x_c'|^2)   (t = 2)
    text_uniformity  = log mean over ordered pairs of distinct captions (c, c') of exp(-2 |y_c - y_c'|^2)
"""
from __future__ import annotations

import math

import torch

# eval.retrieval imports the registry, which imports every task module, this one too: so the module, not its names
# (which it may not have defined yet when it is the one imported first), looked up when a task runs.
from eval import retrieval
from eval.errors import EvalError
from eval.loading import Pixels
from eval.runtime import EvaluableModel, Runtime, Tokenizer
from eval.tasks import Task, register_task

ALIGNMENT_ALPHA = 2.0
UNIFORMITY_T = 2.0
PARTNER_SEED = 0
UNIFORMITY_BLOCK = 1024  # rows of the pairwise distance matrix at a time


@register_task("embedding_stats")
class EmbeddingStats(Task):
    """The geometry above on a retrieval set at `path` (the layouts eval/retrieval.py reads; `split` as there).
    Needs the model's optional `pair_embeddings`."""

    metrics = ("modality_gap", "matching_cosine", "random_cosine", "alignment", "image_uniformity",
               "text_uniformity", "num_images", "num_captions")

    def __init__(self, path: str, split: str = "test"):
        self.path, self.split = path, split

    def open(self, pixels: Pixels) -> retrieval.RetrievalSet:
        return retrieval.open_retrieval_set(self.path, pixels.size, self.split, pixels.resize)

    def run(self, model: EvaluableModel, tokenizer: Tokenizer, data: retrieval.RetrievalSet, runtime: Runtime,
            desc: str) -> dict[str, float]:
        if not callable(getattr(model, "pair_embeddings", None)):
            raise EvalError(f"{desc}: task type 'embedding_stats' needs the model's pair_embeddings(image_repr, "
                            f"text_repr) (the optional method of eval.runtime.EvaluableModel); "
                            f"{type(model).__name__} has none")
        encoded = retrieval.encode_retrieval_set(model, tokenizer, data, runtime, desc)
        if encoded.num_images < 2:
            raise EvalError(f"{data.source} has {encoded.num_images} image; embedding_stats needs at least 2 "
                            f"(random pairs and image uniformity pair different images)")
        image, text = pair_vectors(model, encoded, encoded.caption_image, runtime, f"{desc} pairs")
        partners = partner_images(encoded.num_images)[encoded.caption_image]
        random_image, random_text = pair_vectors(model, encoded, partners, runtime, f"{desc} random pairs")
        for name, vectors in (("image", image), ("text", text), ("random pair image", random_image)):
            if not torch.isfinite(vectors).all():
                raise EvalError(f"the model produced non-finite {name} pair embeddings on {data.source}")
        return {"modality_gap": modality_gap(image, text), "matching_cosine": mean_cosine(image, text),
                "random_cosine": mean_cosine(random_image, random_text), "alignment": alignment(image, text),
                "image_uniformity": uniformity(image, encoded.caption_image),
                "text_uniformity": uniformity(text, torch.arange(encoded.num_captions)),
                "num_images": float(encoded.num_images), "num_captions": float(encoded.num_captions)}


def pair_vectors(model: EvaluableModel, encoded: retrieval.EncodedRetrievalSet, images: torch.Tensor, runtime: Runtime,
                 desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption c with image images[c]: the model's pair embeddings [N_caption, D] each, batch_size pairs per call
    (Llip's image repr is K tokens per image: indexed a batch at a time, not copied per caption at once)."""
    images = images.to(encoded.image_repr.device)
    starts = range(0, encoded.num_captions, runtime.batch_size)
    image_vectors, text_vectors = [], []
    with torch.no_grad(), runtime.autocast():
        for start in runtime.bar(starts, desc, total=len(starts)):
            rows = slice(start, start + runtime.batch_size)
            image_vector, text_vector = model.pair_embeddings(encoded.image_repr[images[rows]],
                                                              encoded.text_repr[rows])
            image_vectors.append(image_vector.float())
            text_vectors.append(text_vector.float())
    return torch.cat(image_vectors), torch.cat(text_vectors)


def partner_images(num_images: int, seed: int = PARTNER_SEED) -> torch.Tensor:
    """[num_images]: each image's partner, the image after it in one seeded random cycle through all of them, so
    no image is its own partner (num_images >= 2) and each is the partner of exactly one."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    partners = torch.empty(num_images, dtype=torch.long)
    partners[order] = order.roll(-1)
    return partners


def modality_gap(image: torch.Tensor, text: torch.Tensor) -> float:
    """|mean image vector - mean text vector| over the rows of [N, D] each."""
    return (image.double().mean(0) - text.double().mean(0)).norm().item()


def mean_cosine(image: torch.Tensor, text: torch.Tensor) -> float:
    """Mean over rows of <image_i, text_i> (the vectors are normalised)."""
    return (image.double() * text.double()).sum(1).mean().item()


def alignment(image: torch.Tensor, text: torch.Tensor, alpha: float = ALIGNMENT_ALPHA) -> float:
    """Mean over rows of |image_i - text_i|^alpha."""
    return (image.double() - text.double()).norm(dim=1).pow(alpha).mean().item()


def uniformity(vectors: torch.Tensor, groups: torch.Tensor, t: float = UNIFORMITY_T,
               block: int = UNIFORMITY_BLOCK) -> float:
    """log mean of exp(-t |v_a - v_b|^2) over ordered pairs (a, b) of normalised rows [N, D] in different groups
    [N] (ids >= 0): a group is one sample, so the vectors a dot-product model repeats for each caption of an image
    never pair. On the unit sphere |v_a - v_b|^2 = 2 - 2 <v_a, v_b>."""
    groups = groups.to(vectors.device)
    sizes = torch.bincount(groups)
    pairs = len(vectors) ** 2 - int((sizes * sizes).sum())
    if pairs == 0:
        raise EvalError(f"uniformity needs vectors of at least two samples; all {len(vectors)} are of one")
    total = torch.zeros((), dtype=torch.float64, device=vectors.device)
    for start in range(0, len(vectors), block):
        rows = slice(start, start + block)
        kernel = (vectors[rows] @ vectors.T).sub_(1).mul_(2 * t).exp_()
        kernel.masked_fill_(groups[rows, None] == groups[None, :], 0)
        total += kernel.sum(1).sum(dtype=torch.float64)  # a row's at most N terms in [0, 1]: float32 holds them
    return math.log(total.item() / pairs)
