"""The hard_negatives task type (eval/hard_negatives.py): CLIP_benchmark's SugarCrepe numbers on tie-free
embeddings, ties counted as wrong where CLIP_benchmark counts them right, each layout's reader (ARO's crop, its
symmetric relations and its 25-image attribute pairs), scoring in blocks against a per-image loop, and the errors."""
import json

import pytest
import torch
import torch.nn.functional as F
from clip_benchmark.datasets.sugar_crepe import SugarCrepe
from clip_benchmark.metrics import image_caption_selection
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from eval import EvalError, evaluate
from eval.hard_negatives import HardNegatives, open_hard_negative_set, true_caption_wins
from eval.loading import Pixels, eval_transform
from eval.runtime import Runtime
from tests.contrastive.test_model import images as random_images
from tests.contrastive.test_model import tiny_model, tokens
from tests.eval.fixtures import BLUE, COLOUR_RGB, GREEN, RED, SIZE, solid
from tests.eval.toy import ToyColourModel, ToyLlipModel, ToyTokenizer


class LookupTokenizer:
    """Each known caption (stripped) is one token id; one id per text."""

    def __init__(self, captions: list[str]):
        self.ids = {caption.strip(): i for i, caption in enumerate(sorted({c.strip() for c in captions}))}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[self.ids[text.strip()]] for text in texts])


class FixedEmbeddingModel(torch.nn.Module):
    """A dot-product model with fixed random unit embeddings: image k is the solid image whose red value is k, caption
    k the token id k. Generic random vectors: no two captions of an image score alike."""

    def __init__(self, num_images: int, num_captions: int, dim: int = 8, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.image_table = F.normalize(torch.randn(num_images, dim, generator=generator), dim=-1)
        self.text_table = F.normalize(torch.randn(num_captions, dim, generator=generator), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_table[images[:, 0, 0, 0].long()]

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.text_table[token_ids[:, 0]]

    def logits(self, image_repr: torch.Tensor, text_repr: torch.Tensor) -> torch.Tensor:
        return 10.0 * image_repr @ text_repr.T

    def combine_templates(self, text_repr: torch.Tensor) -> torch.Tensor:
        return F.normalize(text_repr.mean(0), dim=-1)


class WordTokenizer:
    def __init__(self, captions: list[str], length: int = 12):
        self.ids = {w: i + 1 for i, w in enumerate(sorted({w for c in captions for w in c.split()}))}
        self.length = length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        tokens = torch.zeros(len(texts), self.length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens[row, :len(text.split())] = torch.tensor([self.ids[w] for w in text.split()])
        return tokens


class OrderBlindModel(FixedEmbeddingModel):
    """A text is its bag of words: the count of each word times the word's vector, so a reordering of the same words
    gets exactly the same embedding."""

    def __init__(self, num_images: int, num_words: int):
        super().__init__(num_images, num_words + 1)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        counts = F.one_hot(token_ids, len(self.text_table)).sum(1)
        counts[:, 0] = 0  # padding
        return F.normalize(counts.float() @ self.text_table, dim=-1)


def write_sugarcrepe(root, categories: dict[str, list[tuple[str, str, str]]], images: dict[str, Image.Image]):
    """root/CATEGORY.json in SugarCrepe's layout ({ID: {filename, caption, negative_caption}}) and root/images/."""
    (root / "images").mkdir(parents=True)
    for filename, image in images.items():
        image.save(root / "images" / filename)
    for category, entries in categories.items():
        ann = {str(i): {"filename": f, "caption": c, "negative_caption": n} for i, (f, c, n) in enumerate(entries)}
        (root / f"{category}.json").write_text(json.dumps(ann, indent=4))
    return root


def run(model, tokenizer, path, batch_size=3, block=(256, 1024), **arguments):
    return evaluate(model, tokenizer, {"set": HardNegatives(str(path), **arguments)}, image_size=SIZE,
                    batch_size=batch_size, workers=0, progress=False, block=block)


def metrics_of(results):
    return {key.removeprefix("hard_negatives/set/"): value for key, value in results.items()}


def clip_benchmark_text_accuracy(model, tokenizer, root, category):
    """CLIP_benchmark's SugarCrepe: its dataset class and its image_caption_selection metric (text_acc is the
    SugarCrepe number). The collate is its builder's image_captions_collate_fn, whose module needs `requests`."""
    dataset = SugarCrepe(root=str(root / "images"), ann_file=str(root / f"{category}.json"),
                         transform=eval_transform(SIZE))
    loader = DataLoader(dataset, batch_size=4, collate_fn=lambda batch: (default_collate([b[0] for b in batch]),
                                                                         [b[1] for b in batch]))
    return image_caption_selection.evaluate(model, loader, tokenizer, "cpu", amp=False)["text_acc"]


def numbered(k: int) -> Image.Image:
    """FixedEmbeddingModel's image k."""
    return Image.new("RGB", (SIZE, SIZE), (k, 0, 0))


def test_matches_clip_benchmark_sugarcrepe_on_tie_free_embeddings(tmp_path):
    images = {f"{k:03d}.png": numbered(k) for k in range(12)}
    categories = {
        "swap_att": [(f"{k:03d}.png", f"a caption {k}", f"a negative {k}") for k in range(7)],
        "replace_rel": [(f"{k:03d}.png", f"a caption {k}", f"another negative {k}") for k in (7, 8, 9, 10, 11, 3)],
    }
    root = write_sugarcrepe(tmp_path / "sugarcrepe", categories, images)
    captions = [c for entries in categories.values() for _, *pair in entries for c in pair]
    tokenizer = LookupTokenizer(captions)
    model = FixedEmbeddingModel(len(images), len(tokenizer.ids))
    with torch.no_grad():
        scores = model.image_table @ model.text_table.T
    for entries in categories.values():
        for filename, caption, negative in entries:
            row = scores[int(filename[:3])]
            assert abs(row[tokenizer.ids[caption]] - row[tokenizer.ids[negative]]) > 1e-3  # no tie, not close to one

    ours = metrics_of(run(model, tokenizer, root, block=(2, 3)))
    for category in categories:
        reference = clip_benchmark_text_accuracy(model, tokenizer, root, category)
        assert 0 < reference < 1  # both outcomes occur, so agreement means something
        assert ours[category] == pytest.approx(reference, abs=1e-7)  # its float32 mean
    assert ours["swap_att"] == 2 / 7 and ours["replace_rel"] == 1 / 6  # CLIP_benchmark's, in float64
    assert ours["accuracy"] == 3 / 13 and ours["num_images"] == 13
    assert ours["macro_accuracy"] == pytest.approx((2 / 7 + 1 / 6) / 2) and ours["num_groups"] == 2


def test_ties_count_as_wrong_where_clip_benchmark_counts_them_right(tmp_path):
    swaps = [("a red circle left of a blue square", "a blue circle left of a red square"),
             ("a star above a green cross", "a green star above a cross"),
             ("a big pink hexagon below a small disc", "a small pink hexagon below a big disc")]
    images = {f"{k:03d}.png": numbered(k) for k in range(len(swaps))}
    root = write_sugarcrepe(tmp_path / "sugarcrepe",
                            {"swap_att": [(f"{k:03d}.png", *pair) for k, pair in enumerate(swaps)]}, images)
    tokenizer = WordTokenizer([c for pair in swaps for c in pair])
    model = OrderBlindModel(len(images), len(tokenizer.ids))

    assert clip_benchmark_text_accuracy(model, tokenizer, root, "swap_att") == 1.0  # argmax, positive first
    ours = metrics_of(run(model, tokenizer, root))
    assert ours["swap_att"] == 0.0 and ours["accuracy"] == 0.0


def test_sugarcrepe_folder_reads_every_category_and_file_alone(tmp_path):
    images = {"red.png": solid(RED), "green.png": solid(GREEN), "blue.png": solid(BLUE)}
    categories = {
        "replace_att": [("red.png", "a red thing", "a blue thing"), ("green.png", "a green thing", "a red thing"),
                        ("blue.png", "a red thing", "a blue thing")],  # the last one is wrong
        "add_obj": [("blue.png", "a blue thing ", "a green thing")],
    }
    root = write_sugarcrepe(tmp_path / "sugarcrepe", categories, images)
    (root / "notes.json").write_text("{}")  # not a category: not read

    data = open_hard_negative_set(root, Pixels(SIZE))
    assert data.layout == "sugarcrepe" and data.categories == ("add_obj", "replace_att")  # SugarCrepe's order
    assert data.cases[0].captions == ("a blue thing ", "a green thing") and data.cases[0].box is None
    assert [c.image.name for c in data.cases] == ["blue.png", "red.png", "green.png", "blue.png"]
    assert metrics_of(run(ToyColourModel(), ToyTokenizer(), root)) == pytest.approx({
        "accuracy": 3 / 4, "add_obj": 1.0, "replace_att": 2 / 3, "macro_accuracy": (1 + 2 / 3) / 2,
        "num_groups": 2.0, "num_images": 4.0})

    alone = metrics_of(run(ToyColourModel(), ToyTokenizer(), root / "replace_att.json"))
    assert alone == pytest.approx({"accuracy": 2 / 3, "replace_att": 2 / 3, "macro_accuracy": 2 / 3,
                                   "num_groups": 1.0, "num_images": 3.0})

    elsewhere = tmp_path / "coco_val2017"
    (root / "images").rename(elsewhere)
    assert metrics_of(run(ToyColourModel(), ToyTokenizer(), root, images=str(elsewhere)))["accuracy"] == 3 / 4


def aro_entry(image, box, true, false, **group):
    x, y, w, h = box
    return {"image_path": image, "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h, "true_caption": true,
            "false_caption": false, **group}


def test_aro_relation_crops_the_box_and_leaves_symmetric_relations_out_of_the_macro_average(tmp_path):
    root = tmp_path / "aro"
    (root / "images").mkdir(parents=True)
    halves = Image.new("RGB", (2 * SIZE, SIZE), RED)
    halves.paste(Image.new("RGB", (SIZE, SIZE), GREEN), (SIZE, 0))  # red left half, green right half
    halves.save(root / "images" / "halves.png")
    solid(BLUE).save(root / "images" / "blue.png")
    solid(RED).save(root / "images" / "red.png")
    whole = (0, 0, SIZE, SIZE)
    entries = [
        aro_entry("halves.png", (SIZE, 0, SIZE, SIZE), "a green thing", "a red thing", relation_name="on"),
        aro_entry("blue.png", whole, "a blue thing", "a red thing", relation_name="on"),
        aro_entry("red.png", whole, "a green thing", "a red thing", relation_name="left of"),  # wrong
        aro_entry("red.png", whole, "a red thing", "a blue thing", relation_name="next to"),  # symmetric in ARO
    ]
    (root / "visual_genome_relation.json").write_text(json.dumps(entries))

    data = open_hard_negative_set(root, Pixels(SIZE))
    assert data.layout == "vg_relation" and data.macro_groups == ("left of", "on")
    assert data.cases[0].box == (SIZE, 0, 2 * SIZE, SIZE)
    cropped, index = data.images[0]
    assert index == 0 and cropped.shape == (3, SIZE, SIZE)
    assert torch.equal(cropped, torch.tensor(GREEN, dtype=torch.uint8)[:, None, None].expand(3, SIZE, SIZE))
    # On the whole image, red and green tie for the toy model, and a tie is wrong: the first case is right only cropped.
    assert metrics_of(run(ToyColourModel(), ToyTokenizer(), root)) == pytest.approx({
        "accuracy": 3 / 4, "macro_accuracy": (1.0 + 0.0) / 2, "num_groups": 2.0, "num_images": 4.0})


def test_aro_attribution_averages_the_attribute_pairs_with_at_least_25_images(tmp_path):
    root = tmp_path / "aro"
    (root / "images").mkdir(parents=True)
    solid(RED).save(root / "images" / "red.png")
    whole = (0, 0, SIZE, SIZE)
    common = [aro_entry("red.png", whole, "a red thing", "a blue thing", attributes=["red", "big"])] * 25
    rare = [aro_entry("red.png", whole, "a blue thing", "a red thing", attributes=["blue", "small"])] * 3
    (root / "visual_genome_attribution.json").write_text(json.dumps(common + rare))

    data = open_hard_negative_set(root / "visual_genome_attribution.json", Pixels(SIZE))
    assert data.layout == "vg_attribution" and data.macro_groups == ("red_big",)
    assert metrics_of(run(ToyColourModel(), ToyTokenizer(), root, batch_size=8)) == pytest.approx({
        "accuracy": 25 / 28, "macro_accuracy": 1.0, "num_groups": 1.0, "num_images": 28.0})


def test_order_set_takes_the_true_caption_at_any_index(tmp_path):
    root = tmp_path / "order"
    (root / "images").mkdir(parents=True)
    solid(GREEN).save(root / "images" / "green.png")
    solid(RED).save(root / "images" / "red.png")
    entries = [{"image": "green.png", "caption_options": ["a red thing", "a green thing", "a blue thing"],
                "true_index": 1},
               {"image": "red.png", "caption_options": ["a red thing", "a green thing", "a blue thing"],
                "true_index": 2}]
    (root / "coco_order.json").write_text(json.dumps(entries))

    data = open_hard_negative_set(root / "coco_order.json", Pixels(SIZE))
    assert data.layout == "order" and data.macro_groups is None
    assert data.cases[1].captions == ("a blue thing", "a red thing", "a green thing")
    assert metrics_of(run(ToyColourModel(), ToyTokenizer(), root / "coco_order.json")) == {
        "accuracy": 0.5, "num_images": 2.0}


class RecordingLlip(ToyLlipModel):
    def __init__(self):
        super().__init__()
        self.calls = []

    def logits(self, image_repr, text_repr):
        self.calls.append((len(image_repr), len(text_repr)))
        return super().logits(image_repr, text_repr)


@pytest.mark.parametrize("block", [(1, 1), (2, 5), (3, 4), (256, 1024)])
def test_blocked_scoring_equals_a_per_image_loop_and_keeps_to_the_block(block):
    generator = torch.Generator().manual_seed(0)
    counts = [2, 3, 2, 5, 2, 4, 2]
    colours = torch.randint(0, 256, (len(counts), 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    words = list(COLOUR_RGB)
    texts = [" ".join(words[int(i)] for i in torch.randint(0, 6, (2,), generator=generator))
             for _ in range(sum(counts))]
    model, tokenizer = RecordingLlip(), ToyTokenizer()
    image_repr, text_repr = model.encode_image(colours), model.encode_text(tokenizer(texts))
    runtime = Runtime(torch.device("cpu"), block=block)

    wins = true_caption_wins(model, image_repr, text_repr, counts, runtime)
    assert all(images <= block[0] and captions <= block[1] for images, captions in model.calls)
    if block == (256, 1024):
        assert model.calls == [(7, 20)]  # every image with every caption in one call, of which 20 scores are read
    start, expected = 0, []
    for i, count in enumerate(counts):
        row = model.logits(image_repr[i:i + 1], text_repr[start:start + count])[0]
        expected.append(bool(row[0] > row[1:].max()))
        start += count
    assert wins.tolist() == expected and 0 < sum(expected) < len(counts)


@pytest.mark.parametrize("loss", ["clip", "llip"])
def test_a_real_model_is_scored_pair_by_pair_through_its_logits(loss):
    model = tiny_model(loss).eval()
    counts = [2, 4, 3]
    with torch.no_grad():
        image_repr, text_repr = model.encode_image(random_images(3, 32)), model.encode_text(tokens(9, 8))
        wins = true_caption_wins(model, image_repr, text_repr, counts, Runtime(torch.device("cpu"), block=(2, 5)))
        start, expected = 0, []
        for i, count in enumerate(counts):
            row = model.logits(image_repr[i:i + 1], text_repr[start:start + count])[0]
            expected.append(bool(row[0] > row[1:].max()))
            start += count
    assert image_repr.dim() == (3 if loss == "llip" else 2)  # Llip: the mixture tokens, mixed per caption
    assert wins.tolist() == expected


def test_a_missing_image_is_named(tmp_path):
    root = write_sugarcrepe(tmp_path / "sugarcrepe", {"swap_obj": [("red.png", "a red thing", "a blue thing"),
                                                                   ("gone.png", "a red thing", "a blue thing")]},
                            {"red.png": solid(RED)})
    with pytest.raises(EvalError, match=r"1 image files not found, e\.g\. .*images/gone\.png"):
        open_hard_negative_set(root, Pixels(SIZE))
    with pytest.raises(EvalError, match=r"image folder .*elsewhere of hard-negative set .* does not exist"):
        open_hard_negative_set(root, Pixels(SIZE), images=tmp_path / "elsewhere")


@pytest.mark.parametrize("name, content, message", [
    ("swap_att.json", [{"filename": "a.png"}],
     r"swap_att\.json is not in the SugarCrepe layout: expected \{ID: \{\"filename\""),
    ("swap_att.json", {"0": {"filename": "a.png", "caption": "a red thing"}},
     r"swap_att\.json: entry '0' is not in the SugarCrepe layout: expected 'negative_caption' to be a non-empty "
     r"string \(it is missing\)"),
    ("visual_genome_relation.json", [aro_entry("a.png", (0, 0, 0, 4), "x", "y", relation_name="on")],
     r"visual_genome_relation\.json: entry '0' is not in the ARO VG-Relation layout: expected 'bbox_w' to be a "
     r"positive number"),
    ("visual_genome_attribution.json", [aro_entry("a.png", (0, 0, 4, 4), "x", "y", attributes="red")],
     r"entry '0' is not in the ARO VG-Attribution layout: expected 'attributes' to be a list of two strings"),
    ("dataset.json", {"images": []},
     r"dataset\.json is not in the order-set layout: expected a list of \{\"image\""),
    ("order.json", [{"image": "a.png", "caption_options": ["x", "y"], "true_index": 2}],
     r"order\.json: entry '0' is not in the order-set layout: expected 'true_index' to be an index into "
     r"caption_options \(0\.\.1\)"),
    ("swap_att.json", None, r"cannot read .*swap_att\.json as JSON"),
    ("swap_att.json", {}, r"swap_att\.json holds no entries"),
    ("order.json", [], r"hard-negative set .*order\.json holds no entries"),
])
def test_a_json_of_the_wrong_layout_names_the_file_and_what_is_expected(tmp_path, name, content, message):
    (tmp_path / name).write_text("{not json" if content is None else json.dumps(content))
    with pytest.raises(EvalError, match=message):
        open_hard_negative_set(tmp_path / name, Pixels(SIZE))


def test_a_folder_without_a_set_or_with_two_is_refused(tmp_path):
    with pytest.raises(EvalError, match=r"holds no hard-negative set; expected a SugarCrepe folder \(add_att\.json"):
        open_hard_negative_set(tmp_path, Pixels(SIZE))
    for name in ("visual_genome_relation.json", "visual_genome_attribution.json"):
        (tmp_path / name).write_text("[]")
    with pytest.raises(EvalError, match="holds visual_genome_relation.json and visual_genome_attribution.json; "
                                        "name the file"):
        open_hard_negative_set(tmp_path, Pixels(SIZE))
    with pytest.raises(EvalError, match="does not exist"):
        open_hard_negative_set(tmp_path / "absent", Pixels(SIZE))
