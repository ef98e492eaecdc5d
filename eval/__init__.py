"""Zero-shot classification and image-text retrieval evaluators (see docs/eval.md).

    from eval import evaluate
    metrics = evaluate(model, tokenizer, image_size=224, zeroshot={"imagenet": "imagenet/val"},
                       retrieval={"coco": "coco"})   # {"zeroshot/imagenet/top1": 0.71, ...}

Depends only on the model protocol in eval/protocol.py, never on the rest of the repository.
"""
from eval.errors import EvalError
from eval.runner import evaluate, open_datasets

__all__ = ["EvalError", "evaluate", "open_datasets"]
