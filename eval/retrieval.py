"""Image-text retrieval: every image against every caption, scored with the model's `logits` in blocks."""
from __future__ import annotations

import torch

from eval.errors import EvalError
from eval.metrics import check_finite, retrieval_metrics
from eval.protocol import EvaluableModel, Tokenizer
from eval.retrieval_data import RetrievalSet
from eval.runtime import Runtime
from eval.similarity import DEFAULT_BLOCK, blocked_logits


def evaluate_retrieval(model: EvaluableModel, tokenizer: Tokenizer, data: RetrievalSet, runtime: Runtime,
                       block: tuple[int, int] = DEFAULT_BLOCK, desc: str = "retrieval") -> dict[str, float]:
    """t2i_R@{1,5,10}, i2t_R@{1,5,10}, mean_recall (see eval.metrics), num_images and num_captions."""
    loader = runtime.loader(data.images)
    total = len(loader) if data.num_images is not None else None
    image_reprs, orders, captions = [], [], []
    for images, payloads in runtime.bar(loader, f"{desc} images", total=total):
        image_reprs.append(runtime.encode_images(model, images))
        for order, image_captions in payloads:
            orders.append(order)
            captions.append(image_captions)
    if not orders:
        raise EvalError(f"{data.source} yielded no images")
    # Loader workers interleave shards; the (shard, position) order makes ties independent of their number.
    order = sorted(range(len(orders)), key=orders.__getitem__)
    image_repr = torch.cat(image_reprs)[torch.tensor(order, device=image_reprs[0].device)]
    captions = [captions[i] for i in order]
    texts = [caption for image_captions in captions for caption in image_captions]
    caption_image = torch.tensor([i for i, image_captions in enumerate(captions) for _ in image_captions])
    text_repr = runtime.encode_texts(model, tokenizer, texts, f"{desc} captions")
    scores = blocked_logits(model, image_repr, text_repr, runtime, block)
    check_finite(scores, f"{data.source}, {len(captions)} images x {len(texts)} captions")
    metrics = retrieval_metrics(scores, caption_image)
    metrics["num_images"] = float(len(captions))
    metrics["num_captions"] = float(len(texts))
    return metrics
