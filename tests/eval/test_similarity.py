import pytest
import torch

from eval.runtime import Runtime
from eval.zeroshot import class_representations
from tests.eval.toy import ToyColourModel, ToyLlipModel, ToyTokenizer


@pytest.mark.parametrize("model", [ToyColourModel(), ToyLlipModel(stripes=4)])
def test_scores_in_blocks_equal_one_call(model):
    images = torch.randint(0, 256, (11, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    runtime = Runtime(torch.device("cpu"), block=(3, 5))
    image_repr = model.encode_image(images)
    text_repr = model.encode_text(ToyTokenizer()(["red", "green blue", "a cyan", "yellow red", "magenta", "x"] * 3))
    whole = model.logits(image_repr, text_repr)
    assert torch.allclose(runtime.scores(model, image_repr, text_repr), whole, atol=1e-6)


def test_class_representations_combine_each_class_prompts():
    model = ToyLlipModel()
    classes = class_representations(model, ToyTokenizer(), ["red", "blue"], ["a {c}.", "a {c} and green."],
                                    Runtime(torch.device("cpu"), batch_size=3))
    # Llip-style combination is the plain mean of the normalised prompt vectors
    half = 2 ** -0.5
    assert torch.allclose(classes, torch.tensor([[(1 + half) / 2, half / 2, 0.0], [0.0, half / 2, (1 + half) / 2]]))
