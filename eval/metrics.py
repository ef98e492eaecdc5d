"""Zero-shot and retrieval metrics, as CLIP_benchmark defines them, with ties broken deterministically.

Every metric here comes from the rank of the right answer among all candidates, ordered by score, highest
first; among equal scores the candidate with the lower index comes first (the order a stable sort gives).
So a top-k or R@k hit is `rank < k`, and the outcome never depends on how a kernel orders equal values.
"""
from __future__ import annotations

import torch

from eval.errors import EvalError

RECALL_AT = (1, 5, 10)


def check_finite(scores: torch.Tensor, what: str) -> None:
    """NaN compares false with everything, which would count as a perfect rank: refuse it."""
    if not torch.isfinite(scores).all():
        raise EvalError(f"the model produced non-finite logits ({what}); refusing to score them")


def target_ranks(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each row's target class among the row's logits [N, C] -> [N]."""
    target_logit = logits.gather(1, targets[:, None])
    earlier = torch.arange(logits.shape[1], device=logits.device)[None, :] < targets[:, None]
    return (logits > target_logit).sum(1) + ((logits == target_logit) & earlier).sum(1)


def classification_metrics(predictions: torch.Tensor, ranks: torch.Tensor, targets: torch.Tensor,
                           num_classes: int) -> dict[str, float]:
    """top1, top5 (only with 5 or more classes, as CLIP_benchmark) and mean per-class recall.

    Mean per-class recall averages the recall of the classes that occur in `targets` (sklearn's balanced
    accuracy, which CLIP_benchmark uses): a class that is predicted but never the target does not count.
    """
    metrics = {"top1": (ranks < 1).double().mean().item()}
    if num_classes >= 5:
        metrics["top5"] = (ranks < 5).double().mean().item()
    # Two bincounts, not torchmetrics' multiclass_recall: importing torchmetrics costs a fresh process about 4 s
    # (it loads scipy.signal, matplotlib and, when installed, transformers); tests/eval/test_metrics.py checks
    # that the two agree.
    per_class = torch.bincount(targets, minlength=num_classes)
    correct = torch.bincount(targets[predictions == targets], minlength=num_classes)
    present = per_class > 0
    metrics["mean_per_class_recall"] = (correct[present].double() / per_class[present]).mean().item()
    return metrics


def text_to_image_ranks(scores: torch.Tensor, caption_image: torch.Tensor, block: int = 256) -> torch.Tensor:
    """For each caption (column of scores [N_image, N_text]), the rank of its image among all images."""
    caption_score = scores[caption_image, torch.arange(scores.shape[1])]
    above = torch.zeros(scores.shape[1], dtype=torch.long)
    equal = torch.zeros(scores.shape[1], dtype=torch.long)
    for start in range(0, scores.shape[0], block):
        rows = scores[start:start + block]
        above += (rows > caption_score).sum(0)
        equal += (rows == caption_score).sum(0)
    image_index = torch.arange(scores.shape[0])[:, None]
    tied = (equal > 1).nonzero().squeeze(1)  # another image scores exactly the same: rare, so resolved apart
    for columns in tied.split(block):
        earlier = image_index < caption_image[columns][None, :]
        above[columns] += ((scores[:, columns] == caption_score[columns]) & earlier).sum(0)
    return above


def image_to_text_ranks(scores: torch.Tensor, caption_image: torch.Tensor, block: int = 256) -> torch.Tensor:
    """For each image (row of scores), the rank of its best-ranked caption among all captions: its highest-scored
    caption, the lowest-index one among equals."""
    n_image, n_text = scores.shape
    text_index = torch.arange(n_text)
    caption_score = scores[caption_image, text_index]
    best_score = torch.full((n_image,), float("-inf")).scatter_reduce(0, caption_image, caption_score, "amax")
    is_best = caption_score == best_score[caption_image]
    best_text = torch.full((n_image,), n_text).scatter_reduce(0, caption_image[is_best], text_index[is_best], "amin")
    above, equal = [], []
    for start in range(0, n_image, block):
        rows, best = scores[start:start + block], best_score[start:start + block, None]
        above.append((rows > best).sum(1))
        equal.append((rows == best).sum(1))
    above, tied = torch.cat(above), (torch.cat(equal) > 1).nonzero().squeeze(1)
    for rows in tied.split(block):
        earlier = text_index[None, :] < best_text[rows][:, None]
        above[rows] += ((scores[rows] == best_score[rows][:, None]) & earlier).sum(1)
    return above


def retrieval_metrics(scores: torch.Tensor, caption_image: torch.Tensor) -> dict[str, float]:
    """t2i_R@k: fraction of captions whose image is in their top k (CLIP_benchmark's image_retrieval_recall@k);
    i2t_R@k: fraction of images with at least one of their captions in their top k; mean_recall: the mean of
    the six."""
    counts = torch.bincount(caption_image, minlength=scores.shape[0])
    if (counts == 0).any():
        raise EvalError(f"{int((counts == 0).sum())} images have no caption; every image needs at least one")
    t2i = text_to_image_ranks(scores, caption_image)
    i2t = image_to_text_ranks(scores, caption_image)
    metrics = {}
    for k in RECALL_AT:
        metrics[f"t2i_R@{k}"] = (t2i < k).double().mean().item()
    for k in RECALL_AT:
        metrics[f"i2t_R@{k}"] = (i2t < k).double().mean().item()
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
    return metrics
