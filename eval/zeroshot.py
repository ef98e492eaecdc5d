"""Zero-shot classification: each class is its prompt templates filled with its name, encoded and combined by
the model (`combine_templates`); each image is scored against every class with the model's `logits`."""
from __future__ import annotations

import torch

from eval.classification_data import ClassificationSet
from eval.errors import EvalError
from eval.metrics import check_finite, classification_metrics, target_ranks
from eval.prompts import fill
from eval.protocol import EvaluableModel, Tokenizer
from eval.runtime import Runtime
from eval.similarity import DEFAULT_BLOCK, blocked_logits


def class_representations(model: EvaluableModel, tokenizer: Tokenizer, classnames: list[str], templates: list[str],
                          runtime: Runtime, desc: str = "class prompts") -> torch.Tensor:
    """[C, ...]: one representation per class, from len(templates) prompts each."""
    prompts = [fill(template, name) for name in classnames for template in templates]
    per_prompt = runtime.encode_texts(model, tokenizer, prompts, desc)
    per_class = per_prompt.unflatten(0, (len(classnames), len(templates)))
    with torch.no_grad():
        return torch.stack([model.combine_templates(reprs.float()) for reprs in per_class])


def evaluate_zeroshot(model: EvaluableModel, tokenizer: Tokenizer, data: ClassificationSet, runtime: Runtime,
                      block: tuple[int, int] = DEFAULT_BLOCK, desc: str = "zeroshot") -> dict[str, float]:
    """top1, top5, mean_per_class_recall (see eval.metrics) and num_images."""
    classes = class_representations(model, tokenizer, data.classnames, data.templates, runtime, f"{desc} prompts")
    loader = runtime.loader(data.images)
    total = len(loader) if data.num_images is not None else None
    ranks, predictions, targets = [], [], []
    for images, labels in runtime.bar(loader, f"{desc} images", total=total):
        logits = blocked_logits(model, runtime.encode_images(model, images), classes, runtime, block)
        check_finite(logits, f"{data.source}, {len(classes)} classes")
        labels = torch.tensor(labels)
        ranks.append(target_ranks(logits, labels))
        predictions.append(logits.argmax(1))
        targets.append(labels)
    if not targets:
        raise EvalError(f"{data.source} yielded no images")
    metrics = classification_metrics(torch.cat(predictions), torch.cat(ranks), torch.cat(targets), len(classes))
    metrics["num_images"] = float(sum(len(t) for t in targets))
    return metrics
