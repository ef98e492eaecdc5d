import hashlib
import json
import random
import re
import tarfile

import pytest
from PIL import Image

from data.errors import DataError
from data.captions import RELATION_WORDS, SHAPE_WORDS
from data.scenes import COLOURS, RELATIONS, SHAPES, Scene, random_scene, relation_between
from data.synth import HARD_NEGATIVE_CATEGORIES, describe_stopped, hard_negative_pair, synthesize
from data.tokenizer import Tokenizer
from eval.hard_negatives import open_hard_negative_set
from eval.loading import Pixels

SMALL = dict(train_samples=30, samples_per_shard=12, image_size=32, images_per_class=1, retrieval_images=6,
             hard_negative_images=3)


def _digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "demo"
    info = synthesize(out, seed=3, progress=False, **SMALL)
    return out, info


def test_same_seed_same_bytes_other_seed_other_bytes(demo, tmp_path):
    out, _ = demo
    synthesize(tmp_path / "again", seed=3, progress=False, **SMALL)
    synthesize(tmp_path / "other", seed=4, progress=False, **SMALL)
    same, other = _digests(tmp_path / "again"), _digests(tmp_path / "other")
    assert _digests(out) == same
    assert same["train/shard-000000.tar"] != other["train/shard-000000.tar"]
    assert same["eval/retrieval_attributes/dataset.json"] != other["eval/retrieval_attributes/dataset.json"]


def test_train_shards_layout_and_captions(demo):
    out, info = demo
    shards = sorted((out / "train").glob("*.tar"))
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert info["train"]["pattern"] == "train/shard-{000000..000002}.tar"
    with tarfile.open(shards[2]) as tar:
        names = tar.getnames()
        assert names[:3] == ["000000024.json", "000000024.png", "000000024.txt"] and len(names) == 18
        captions = tar.extractfile("000000024.txt").read().decode().splitlines()
        meta = json.loads(tar.extractfile("000000024.json").read())
        image = Image.open(tar.extractfile("000000024.png"))
        assert image.size == (32, 32) and image.mode == "RGB"
    assert len(captions) == 5 and meta["caption"] == captions[0] and meta["captions"] == captions
    for obj in meta["objects"]:  # attribute and relation captions name every object's colour
        assert all(obj["colour"] in c for c in captions)
    lines = info["train"]["caption_lines"]
    assert lines["attribute"] + lines["relation"] == 5 * 30 and 0 < lines["relation"] < lines["attribute"]


def test_zeroshot_sets_are_imagefolders_with_classnames_and_templates(demo):
    out, info = demo
    for split, classes in (("zeroshot_attributes", 48), ("zeroshot_relations", 60)):
        root = out / "eval" / split
        folders = sorted(p.name for p in root.iterdir() if p.is_dir())
        names = (root / "classnames.txt").read_text().splitlines()
        assert len(folders) == len(names) == classes == info["eval"][split]["classes"]
        assert [f.replace("_", " ") for f in folders] == names
        assert sum(1 for _ in root.rglob("*.png")) == classes
        templates = (root / "templates.txt").read_text().splitlines()
        assert templates and all("{c}" in t for t in templates)
        assert info["eval"][split]["chance_top1"] == pytest.approx(1 / classes)
    assert "red circle" in (out / "eval/zeroshot_attributes/classnames.txt").read_text().splitlines()
    assert "circle left of a square" in (out / "eval/zeroshot_relations/classnames.txt").read_text().splitlines()


def test_retrieval_sets_are_karpathy_json_with_five_captions(demo):
    out, info = demo
    for split in ("retrieval_attributes", "retrieval_relations"):
        root = out / "eval" / split
        images = json.loads((root / "dataset.json").read_text())["images"]
        assert len(images) == 6 == info["eval"][split]["images"]
        sentids = []
        for i, image in enumerate(images):
            assert (image["split"], image["filepath"], image["imgid"]) == ("test", "images", i)
            assert (root / image["filepath"] / image["filename"]).is_file()
            assert len(image["sentences"]) == 5 == len({s["raw"] for s in image["sentences"]})
            assert [s["sentid"] for s in image["sentences"]] == image["sentids"]
            assert all(s["tokens"] == s["raw"].replace(",", "").replace(":", "").split() for s in image["sentences"])
            sentids += image["sentids"]
        assert sentids == list(range(30))
    relation_text = (out / "eval/retrieval_relations/dataset.json").read_text()
    assert any(word in relation_text for word in ("left of", "right of", "above", "below"))


def test_tokenizer_covers_the_captions(demo):
    out, _ = demo
    tok = Tokenizer.from_file(out / "tokenizer.json", context_length=32)
    ids = tok(["a large red circle on a grey background"])
    assert tok.decode(ids[0]) == "a large red circle on a grey background"
    assert int(tok.eot_positions(ids)[0]) <= 10  # whole words are single tokens, not bytes


def test_replaces_its_own_output_but_not_other_directories(demo, tmp_path):
    out = tmp_path / "d"
    synthesize(out, seed=1, progress=False, **SMALL)
    synthesize(out, seed=2, progress=False, **SMALL)
    assert json.loads((out / "info.json").read_text())["seed"] == 2
    assert not (tmp_path / "d.partial").exists() and not (tmp_path / "d.old").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="mine exists and is not an earlier synth output"):
        synthesize(tmp_path / "mine", progress=False, **SMALL)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_describes_what_a_stop_left(tmp_path):
    out = tmp_path / "d"
    assert describe_stopped(out) == f"nothing was written to {out}; run the same command again to build it"
    (tmp_path / "d.partial").mkdir()
    assert describe_stopped(out).startswith(f"{out} is as it was; the unfinished build in {tmp_path / 'd.partial'} "
                                            "is deleted when you run the same command again")
    (tmp_path / "d.old").mkdir()
    assert describe_stopped(out) == (f"the stop came as {out} was being replaced; running the same command again "
                                     f"deletes d.partial and d.old and builds {out} from the start")
    synthesize(out, progress=False, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert describe_stopped(out) == f"{out} holds a complete synth output; nothing is left to clean up"


def test_a_rerun_deletes_what_a_killed_run_left(tmp_path):
    out = tmp_path / "d"
    for leftover in ("d.partial", "d.old"):  # killed while building; killed between the two renames of the swap
        (tmp_path / leftover / "train").mkdir(parents=True)
        (tmp_path / leftover / "train" / "shard-000000.tar").write_bytes(b"cut")
    synthesize(out, progress=False, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


SHAPE_OF_WORD = {word: shape for shape, words in SHAPE_WORDS.items() for word in words}
RELATION_OF_WORDS = {words: relation for relation, options in RELATION_WORDS.items() for words in options}
_SHAPE = "|".join(sorted(SHAPE_OF_WORD, key=len, reverse=True))
HARD_NEGATIVE_CAPTION = re.compile(rf"a (\w+) ({_SHAPE}) ({'|'.join(RELATION_OF_WORDS)}) a (\w+) ({_SHAPE})")


def _true_of(scene: Scene, caption: str) -> bool:
    colour, word, said, other_colour, other_word = HARD_NEGATIVE_CAPTION.fullmatch(caption).groups()
    objects = {(obj.colour, obj.shape): obj for obj in scene.objects}
    first, second = objects.get((colour, SHAPE_OF_WORD[word])), objects.get((other_colour, SHAPE_OF_WORD[other_word]))
    return (first is not None and second is not None
            and relation_between((first.x, first.y), (second.x, second.y)) == RELATION_OF_WORDS[said])


@pytest.mark.parametrize("category", HARD_NEGATIVE_CATEGORIES)
def test_hard_negative_is_false_of_the_scene_and_differs_only_as_its_category_says(category):
    changed = {"swap_att": {0, 3}, "swap_obj": {0, 1, 3, 4}, "replace_rel": {2}, "replace_obj": {1, 4}}[category]
    for index in range(200):
        rng = random.Random(index)
        scene = random_scene(rng, 2, shapes=rng.sample(SHAPES, 2), colours=rng.sample(list(COLOURS), 2),
                             relation=rng.choice(RELATIONS))
        caption, negative = hard_negative_pair(rng, scene, category)
        assert _true_of(scene, caption) and not _true_of(scene, negative), (caption, negative)
        parts = [HARD_NEGATIVE_CAPTION.fullmatch(c).groups() for c in (caption, negative)]
        differ = {i for i, (a, b) in enumerate(zip(*parts)) if a != b}
        assert differ <= changed and (differ == changed or category == "replace_obj" and len(differ) == 1)
        if category.startswith("swap"):
            assert sorted(caption.split()) == sorted(negative.split())  # the same words: only their order tells


def test_hard_negative_sets_are_sugarcrepe_files_the_evaluator_reads(demo):
    out, info = demo
    root = out / "eval" / "hard_negatives"
    assert sorted(p.name for p in root.glob("*.json")) == sorted(f"{c}.json" for c in HARD_NEGATIVE_CATEGORIES)
    assert len(list((root / "images").glob("*.png"))) == 3 * len(HARD_NEGATIVE_CATEGORIES)
    for category in HARD_NEGATIVE_CATEGORIES:
        entries = json.loads((root / f"{category}.json").read_text())
        assert list(entries) == ["0", "1", "2"]
        assert all(set(e) == {"filename", "caption", "negative_caption"} for e in entries.values())
    data = open_hard_negative_set(root, Pixels(32))
    assert data.layout == "sugarcrepe" and sorted(data.categories) == sorted(HARD_NEGATIVE_CATEGORIES)
    assert len(data.cases) == 12
    assert info["eval"]["hard_negatives"] == {"task": "hard_negatives", "images": 12, "chance_accuracy": 0.5,
                                              "categories": {c: 3 for c in HARD_NEGATIVE_CATEGORIES}}
    assert "`eval/hard_negatives/`: compositional hard negatives" in (out / "README.md").read_text()
    tok = Tokenizer.from_file(out / "tokenizer.json", context_length=32)
    assert int(tok.eot_positions(tok([entries["0"]["negative_caption"]]))[0]) <= 12  # trained on these captions too
