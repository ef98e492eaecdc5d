"""The embedding_stats task type (eval/embedding_stats.py): each metric on hand-computed vectors, the pair embeddings
of every loss (and of a Llip model) against the logits they must explain, and the task end to end."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from eval import EvalError, evaluate
from eval.embedding_stats import (EmbeddingStats, alignment, mean_cosine, modality_gap, partner_images,
                                  uniformity)
from eval.retrieval import encode_retrieval_set, open_retrieval_set
from eval.runtime import Runtime
from tests.contrastive.test_model import images, tiny_model, tokens
from tests.eval.fixtures import BLUE, GREEN, RED, SIZE, solid, write_karpathy
from tests.eval.toy import ToyColourModel, ToyTokenizer
from tests.losses.cases import CASES, make_batch, make_loss


class ToyColourModelWithPairs(ToyColourModel):
    def pair_embeddings(self, image_repr, text_repr):
        return image_repr, text_repr


def run(model, path, tokenizer=None, image_size=SIZE):
    return evaluate(model, tokenizer or ToyTokenizer(), {"set": EmbeddingStats(str(path))}, image_size=image_size,
                    batch_size=2, workers=0, progress=False)


def test_gap_cosine_and_alignment_of_hand_computed_pairs():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    # means (0.5, 0.5) and (0.7, 0.7); each pair's cosine 0.6, so |x - y|^2 = 2 - 2 x 0.6
    assert modality_gap(image, text) == pytest.approx(0.2 * math.sqrt(2))
    assert mean_cosine(image, text) == pytest.approx(0.6)
    assert alignment(image, text) == pytest.approx(0.8)
    assert alignment(image, text, alpha=1) == pytest.approx(math.sqrt(0.8))


def test_uniformity_of_hand_computed_vectors_counts_only_pairs_of_different_samples():
    a, b, c = [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]  # |a - b|^2 = |b - c|^2 = 2, |a - c|^2 = 4
    vectors = torch.tensor([a, b, c])
    every_pair = (4 * math.exp(-4) + 2 * math.exp(-8)) / 6
    assert uniformity(vectors, torch.arange(3)) == pytest.approx(math.log(every_pair))
    a_and_b_as_one_sample = (2 * math.exp(-8) + 2 * math.exp(-4)) / 4  # only (a, c) and (b, c), both ways
    assert uniformity(vectors, torch.tensor([0, 0, 1])) == pytest.approx(math.log(a_and_b_as_one_sample))
    with pytest.raises(EvalError, match="at least two samples; all 3 are of one"):
        uniformity(vectors, torch.zeros(3, dtype=torch.long))


def test_uniformity_in_blocks_equals_a_naive_loop():
    vectors = F.normalize(torch.randn(11, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    groups = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6])
    terms = [math.exp(-2 * (vectors[i] - vectors[j]).norm().item() ** 2)
             for i in range(11) for j in range(11) if groups[i] != groups[j]]
    for block in (1, 4, 11, 1024):
        assert uniformity(vectors, groups, block=block) == pytest.approx(math.log(sum(terms) / len(terms)), rel=1e-6)


def test_partner_images_are_a_seeded_derangement_in_one_cycle():
    partners = partner_images(7)
    assert torch.equal(partners, partner_images(7)) and sorted(partners.tolist()) == list(range(7))
    image, cycle = 0, []
    for _ in range(7):
        cycle.append(image)
        image = int(partners[image])
    assert image == 0 and sorted(cycle) == list(range(7))  # one cycle through all: nobody is their own partner
    assert partner_images(2).tolist() == [1, 0]


@pytest.mark.parametrize("case", CASES)
def test_pair_embeddings_are_the_normalised_vectors_whose_cosine_the_logits_scale(case):
    loss = make_loss(case)
    image, text = make_batch(loss.scorer, 5)
    partners = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        logits = loss.logits(image, text)
        bias = loss.logit_bias if hasattr(loss, "logit_bias") else 0.0
        for rows, pairs in ((torch.arange(5), logits.diagonal()), (partners, logits[partners, torch.arange(5)])):
            image_vectors, text_vectors = loss.pair_embeddings(image[rows], text)
            assert image_vectors.shape == text_vectors.shape == (5, 8)
            torch.testing.assert_close(image_vectors.norm(dim=1), torch.ones(5))
            torch.testing.assert_close(text_vectors.norm(dim=1), torch.ones(5))
            torch.testing.assert_close(loss._scale() * (image_vectors * text_vectors).sum(1) + bias, pairs)


def test_a_llip_models_pair_embeddings_give_its_logits_and_depend_on_the_caption():
    model = tiny_model("llip").eval()
    with torch.no_grad():
        image_repr, text_repr = model(images(4, 32), tokens(4, 8))
        image_vectors, text_vectors = model.pair_embeddings(image_repr, text_repr)
        logits = model.logits(image_repr, text_repr)
        other_caption, _ = model.pair_embeddings(image_repr, text_repr.roll(1, 0))
    scale, bias = model.loss._scale(), model.loss.logit_bias
    torch.testing.assert_close(scale * (image_vectors * text_vectors).sum(1) + bias, logits.diagonal())
    assert not torch.allclose(image_vectors, other_caption)  # the image vector is conditioned on the text


@pytest.fixture
def colour_set(tmp_path):
    """Red with two red captions, green with "green", blue with "yellow"."""
    return write_karpathy(tmp_path / "colours", [(solid(RED), ["red", "a red thing"]), (solid(GREEN), ["green"]),
                                                 (solid(BLUE), ["yellow"])])


def test_the_task_on_a_set_whose_geometry_is_worked_out_by_hand(colour_set):
    metrics = run(ToyColourModelWithPairs(), colour_set)
    # pairs (x, y): (r, r), (r, r), (g, g), (b, y) with y = (1, 1, 0) / sqrt 2, so <b, y> = 0 and <r, y> = <g, y>
    # = 1 / sqrt 2; mean x - mean y = ((2, 1, 1) - (2 + 1 / sqrt 2, 1 + 1 / sqrt 2, 0)) / 4.
    # Random pairs: of the two cycles through three images, either puts "yellow" with red or green (cosine
    # 1 / sqrt 2) and every other caption with an image of an orthogonal colour.
    # Image uniformity: 16 - (2 x 2 + 1 + 1) = 10 ordered pairs of different images, all at |x - x'|^2 = 2.
    # Text uniformity over 12 ordered pairs of distinct captions: the two red ones coincide (2 pairs), red-green
    # (4) at distance^2 2, and red-yellow (4) and green-yellow (2) at 2 - sqrt 2.
    text_terms = 2 + 4 * math.exp(-4) + 6 * math.exp(-2 * (2 - math.sqrt(2)))
    assert metrics == pytest.approx({
        "embedding_stats/set/modality_gap": math.sqrt(2) / 4, "embedding_stats/set/matching_cosine": 0.75,
        "embedding_stats/set/random_cosine": 1 / math.sqrt(2) / 4, "embedding_stats/set/alignment": 0.5,
        "embedding_stats/set/image_uniformity": -4.0, "embedding_stats/set/text_uniformity": math.log(text_terms / 12),
        "embedding_stats/set/num_images": 3.0, "embedding_stats/set/num_captions": 4.0}, abs=1e-6)


def test_on_a_llip_model_the_matching_cosine_is_that_of_its_logits_of_each_caption_with_its_image(colour_set):
    model, tokenizer = tiny_model("llip").eval(), ToyTokenizer(length=8)
    metrics = run(model, colour_set, tokenizer, image_size=32)
    encoded = encode_retrieval_set(model, tokenizer, open_retrieval_set(colour_set, 32),
                                   Runtime(torch.device("cpu"), workers=0))
    with torch.no_grad():
        logits = model.logits(encoded.image_repr, encoded.text_repr)[encoded.caption_image, torch.arange(4)]
        cosines = (logits - model.loss.logit_bias) / model.loss._scale()
    assert metrics["embedding_stats/set/matching_cosine"] == pytest.approx(cosines.mean().item(), abs=1e-5)
    assert metrics["embedding_stats/set/alignment"] == pytest.approx(2 - 2 * cosines.mean().item(), abs=1e-5)
    assert metrics["embedding_stats/set/num_captions"] == 4.0


def test_a_model_without_pair_embeddings_is_refused_by_name(colour_set):
    with pytest.raises(EvalError, match=r"embedding_stats/set: task type 'embedding_stats' needs the model's "
                                        r"pair_embeddings\(image_repr, text_repr\) .*; ToyColourModel has none"):
        run(ToyColourModel(), colour_set)


@pytest.mark.parametrize("module", ["eval.retrieval", "eval.embedding_stats"])
def test_either_module_can_be_the_first_import_of_a_process(module):
    """eval.retrieval imports the registry, which imports eval.embedding_stats, which uses eval.retrieval."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_set_of_one_image_is_refused(tmp_path):
    one = write_karpathy(tmp_path / "one", [(solid(RED), ["red", "a red thing"])])
    with pytest.raises(EvalError, match="has 1 image; embedding_stats needs at least 2"):
        run(ToyColourModelWithPairs(), one)
