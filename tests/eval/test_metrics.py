import pytest
import torch

from eval.errors import EvalError
from eval.metrics import (check_finite, classification_metrics, image_to_text_ranks, retrieval_metrics,
                          target_ranks, text_to_image_ranks)


def test_target_rank_counts_higher_scores_and_equal_scores_of_lower_index():
    logits = torch.tensor([[1.0, 2.0, 2.0, 0.0], [1.0, 2.0, 2.0, 0.0], [3.0, 3.0, 3.0, 3.0]])
    assert target_ranks(logits, torch.tensor([2, 1, 3])).tolist() == [1, 0, 3]


def test_classification_metrics_hand_computed():
    # targets 0,0,1,1,2 predicted 0,1,1,1,3: class 3 is predicted but never a target, so it is not averaged
    predictions = torch.tensor([0, 1, 1, 1, 3])
    targets = torch.tensor([0, 0, 1, 1, 2])
    ranks = torch.tensor([0, 1, 0, 0, 5])
    metrics = classification_metrics(predictions, ranks, targets, num_classes=6)
    assert metrics == pytest.approx({"top1": 3 / 5, "top5": 4 / 5, "mean_per_class_recall": (1 / 2 + 1 + 0) / 3})


def test_top5_is_left_out_below_five_classes():
    metrics = classification_metrics(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 0]), num_classes=3)
    assert set(metrics) == {"top1", "mean_per_class_recall"}
    assert metrics["top1"] == 0.5 and metrics["mean_per_class_recall"] == 0.5


def test_classification_matches_topk_accuracy_and_balanced_accuracy_without_ties():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=generator)
    targets = torch.randint(0, 10, (200,), generator=generator)
    predictions = logits.argmax(1)
    metrics = classification_metrics(predictions, target_ranks(logits, targets), targets, num_classes=10)
    top5 = (logits.topk(5, dim=1).indices == targets[:, None]).any(1).double().mean().item()
    per_class = [(predictions[targets == c] == c).double().mean().item() for c in range(10)]
    assert metrics["top1"] == pytest.approx((predictions == targets).double().mean().item())
    assert metrics["top5"] == pytest.approx(top5)
    assert metrics["mean_per_class_recall"] == pytest.approx(sum(per_class) / 10)


def test_mean_per_class_recall_equals_torchmetrics_and_sklearn_with_absent_and_never_predicted_classes():
    multiclass_recall = pytest.importorskip("torchmetrics.functional.classification").multiclass_recall
    balanced_accuracy_score = pytest.importorskip("sklearn.metrics").balanced_accuracy_score
    generator = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 7, (300,), generator=generator)  # classes 7..9 never occur as a target
    predictions = torch.where(torch.rand(300, generator=generator) < 0.6, targets,
                              torch.randint(0, 10, (300,), generator=generator))
    metrics = classification_metrics(predictions, torch.zeros(300, dtype=torch.long), targets, num_classes=10)
    recall = multiclass_recall(predictions, targets, num_classes=10, average="none")
    assert metrics["mean_per_class_recall"] == pytest.approx(recall[:7].double().mean().item(), abs=1e-6)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        balanced = balanced_accuracy_score(targets, predictions)
    assert metrics["mean_per_class_recall"] == pytest.approx(balanced, abs=1e-12)


def test_retrieval_hand_computed_with_six_captions_and_ties():
    # image 0 has captions 0..5 (six), image 1 captions 6 and 7; image 1 scores every caption alike
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.9, 0.0],
                           [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    caption_image = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    # image 0's best caption (5) ties with caption 6 but comes first; image 1's first caption (6) has 6 equals before it
    assert image_to_text_ranks(scores, caption_image).tolist() == [0, 6]
    # caption 4 ties between the images and the lower index (its own image 0) wins
    assert text_to_image_ranks(scores, caption_image).tolist() == [1, 1, 1, 1, 0, 0, 1, 0]
    metrics = retrieval_metrics(scores, caption_image)
    expected = {"t2i_R@1": 3 / 8, "t2i_R@5": 1.0, "t2i_R@10": 1.0, "i2t_R@1": 0.5, "i2t_R@5": 0.5, "i2t_R@10": 1.0}
    assert metrics == pytest.approx({**expected, "mean_recall": sum(expected.values()) / 6})


def test_duplicate_captions_of_two_images_count_for_the_first_image_only():
    # captions 0 (image 0) and 1 (image 1) are the same text: identical scores in every row
    scores = torch.tensor([[2.0, 2.0, 0.0], [2.0, 2.0, 1.0]])
    caption_image = torch.tensor([0, 1, 1])
    assert image_to_text_ranks(scores, caption_image).tolist() == [0, 1]
    assert text_to_image_ranks(scores, caption_image).tolist() == [0, 1, 0]


def test_retrieval_matches_topk_definition_without_ties():
    generator = torch.Generator().manual_seed(1)
    caption_image = torch.randint(0, 40, (150,), generator=generator)
    caption_image[:40] = torch.arange(40)  # every image has a caption; some have many
    scores = torch.randn(40, 150, generator=generator)
    metrics = retrieval_metrics(scores, caption_image)
    for k in (1, 5, 10):
        top_images = scores.T.topk(k, dim=1).indices
        t2i = (top_images == caption_image[:, None]).any(1).double().mean().item()
        top_texts = scores.topk(k, dim=1).indices
        i2t = (caption_image[top_texts] == torch.arange(40)[:, None]).any(1).double().mean().item()
        assert metrics[f"t2i_R@{k}"] == pytest.approx(t2i)
        assert metrics[f"i2t_R@{k}"] == pytest.approx(i2t)


def test_blocks_do_not_change_ranks():
    generator = torch.Generator().manual_seed(2)
    scores = torch.randint(0, 3, (7, 20), generator=generator).float()  # many ties
    caption_image = torch.arange(20) % 7
    assert torch.equal(image_to_text_ranks(scores, caption_image, block=3), image_to_text_ranks(scores, caption_image))
    assert torch.equal(text_to_image_ranks(scores, caption_image, block=6), text_to_image_ranks(scores, caption_image))


def test_an_image_without_captions_is_an_error():
    with pytest.raises(EvalError, match="1 images have no caption"):
        retrieval_metrics(torch.zeros(3, 2), torch.tensor([0, 2]))


def test_non_finite_logits_are_an_error_not_a_perfect_rank():
    with pytest.raises(EvalError, match="non-finite"):
        check_finite(torch.tensor([[0.0, float("nan")]]), "test")


def test_a_collapsed_model_scores_by_index_alone():
    # constant logits (an untrained model can give them): every comparison is a tie
    caption_image = torch.tensor([0, 0, 1, 2, 2, 2])
    scores = torch.zeros(3, 6)
    assert text_to_image_ranks(scores, caption_image).tolist() == [0, 0, 1, 2, 2, 2]
    assert image_to_text_ranks(scores, caption_image).tolist() == [0, 2, 3]
    metrics = retrieval_metrics(scores, caption_image)
    assert (metrics["t2i_R@1"], metrics["i2t_R@1"], metrics["i2t_R@5"]) == pytest.approx((2 / 6, 1 / 3, 1.0))
