"""Both evaluators end to end, with toy colour models whose scores can be worked out by hand (tests/eval/toy.py)."""
import pytest
import torch

from eval import EvalError, evaluate
from tests.eval.fixtures import (BLUE, COLOUR_RGB, GREEN, RED, SIZE, png_bytes, solid, top_and_rest,
                                 write_image_folder, write_karpathy, write_tar)
from tests.eval.toy import ToyColourModel, ToyLlipModel, ToyTokenizer

MODELS = {"dot": ToyColourModel, "llip": ToyLlipModel}
TEMPLATES = ["a photo of a {c}.", "a {c} thing."]


def run(model, **datasets):
    return evaluate(model, ToyTokenizer(), image_size=SIZE, batch_size=4, workers=0, progress=False, **datasets)


@pytest.fixture
def colour_folder(tmp_path):
    """Two solid images per colour class, plus a blue image filed under red."""
    images = {name: [solid(rgb)] * 2 for name, rgb in COLOUR_RGB.items()}
    images["red"].append(solid(BLUE))
    return write_image_folder(tmp_path / "colours", images, classnames=sorted(COLOUR_RGB), templates=TEMPLATES)


@pytest.mark.parametrize("model", MODELS)
def test_zeroshot_image_folder(colour_folder, model):
    metrics = run(MODELS[model](), zeroshot={"colours": colour_folder})
    # the misfiled blue image scores red 0, tied with green (earlier, ranked first) and yellow: rank 4, a top-5 hit
    assert metrics == pytest.approx({
        "zeroshot/colours/top1": 12 / 13, "zeroshot/colours/top5": 1.0,
        "zeroshot/colours/mean_per_class_recall": (5 + 2 / 3) / 6, "zeroshot/colours/num_images": 13.0})


@pytest.mark.parametrize("model", MODELS)
def test_zeroshot_clip_benchmark_shards(tmp_path, model):
    names = sorted(COLOUR_RGB)
    samples = [(f"s{i:03d}", {"png": png_bytes(solid(COLOUR_RGB[name])), "cls": str(i).encode()})
               for i, name in enumerate(names)]
    samples.append(("s100", {"png": png_bytes(solid(BLUE)), "cls": str(names.index("red")).encode()}))
    write_tar(tmp_path / "test" / "0.tar", samples[:4])
    write_tar(tmp_path / "test" / "1.tar", samples[4:])
    (tmp_path / "classnames.txt").write_text("\n".join(names))
    (tmp_path / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES))
    metrics = run(MODELS[model](), zeroshot={"wds": tmp_path})
    assert metrics == pytest.approx({"zeroshot/wds/top1": 6 / 7, "zeroshot/wds/top5": 1.0,
                                     "zeroshot/wds/mean_per_class_recall": (5 + 1 / 2) / 6,
                                     "zeroshot/wds/num_images": 7.0})


def llip_probe_images():
    """X: solid (255, 0, 200), captioned "blue"; A: a red top quarter over blue, captioned "red".
    Mean colours put X nearer red and A nearer blue; attending over A's stripes finds red and blue."""
    return [(solid((255, 0, 200)), ["blue"]), (top_and_rest(RED, BLUE, top_rows=SIZE // 4), ["red"])]


# dot: both captions rank their image second, and both images rank their caption second.
# llip: "red" and "blue" both attend to A's matching stripes, so "red" finds A (t2i hit) and "blue" finds A
# too (miss); A scores "blue" (9.99997) above its own "red" (9.998): no i2t hit at 1.
EXPECTED_AT_1 = {"dot": (0.0, 0.0), "llip": (0.5, 0.0)}


@pytest.mark.parametrize("model", MODELS)
def test_retrieval_karpathy_and_shards_agree(tmp_path, model):
    karpathy = write_karpathy(tmp_path / "karpathy", llip_probe_images())
    for i, (image, captions) in enumerate(llip_probe_images()):
        write_tar(tmp_path / "wds" / "test" / f"{i}.tar", [("k", {"png": png_bytes(image),
                                                                  "txt": "\n".join(captions).encode()})])
    metrics = run(MODELS[model](), retrieval={"karpathy": karpathy, "wds": tmp_path / "wds"})
    t2i, i2t = EXPECTED_AT_1[model]
    for name in ("karpathy", "wds"):
        expected = {"t2i_R@1": t2i, "t2i_R@5": 1.0, "t2i_R@10": 1.0, "i2t_R@1": i2t, "i2t_R@5": 1.0, "i2t_R@10": 1.0}
        expected["mean_recall"] = sum(expected.values()) / 6
        expected.update(num_images=2.0, num_captions=2.0)
        assert {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith(f"retrieval/{name}/")} == pytest.approx(expected)


def test_retrieval_ties_do_not_depend_on_loader_workers(tmp_path):
    # shard 0: G then R1 ("red"); shard 1: R2 ("red", "red"). Two workers deliver G, R2, R1; the (shard, position)
    # order is G, R1, R2, so R1 and its caption come first in every red tie.
    write_tar(tmp_path / "0.tar", [("g", {"png": png_bytes(solid(GREEN)), "txt": b"green"}),
                                   ("r1", {"png": png_bytes(solid(RED)), "txt": b"red"})])
    write_tar(tmp_path / "1.tar", [("r2", {"png": png_bytes(solid(RED)), "txt": b"red\nred"})])
    for workers in (0, 2):
        metrics = evaluate(ToyColourModel(), ToyTokenizer(), image_size=SIZE, retrieval={"r": tmp_path},
                           batch_size=1, workers=workers, progress=False)
        assert (metrics["retrieval/r/t2i_R@1"], metrics["retrieval/r/i2t_R@1"]) == pytest.approx((2 / 4, 2 / 3))


def test_bf16_autocast_and_model_mode(colour_folder):
    model = ToyColourModel().train()
    metrics = evaluate(model, ToyTokenizer(), image_size=SIZE, zeroshot={"c": colour_folder}, workers=0,
                       progress=True, autocast_dtype=torch.bfloat16)
    assert metrics["zeroshot/c/top1"] == pytest.approx(12 / 13) and model.training


class CountingModel(ToyColourModel):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def encode_text(self, token_ids):
        self.calls += 1
        return super().encode_text(token_ids)


def test_every_dataset_is_checked_before_any_model_work(colour_folder, tmp_path):
    model = CountingModel()
    with pytest.raises(EvalError, match="does not exist"):
        run(model, zeroshot={"colours": colour_folder}, retrieval={"coco": tmp_path / "missing"})
    assert model.calls == 0
    with pytest.raises(EvalError, match="without '/'"):
        run(model, zeroshot={"a/b": colour_folder})
