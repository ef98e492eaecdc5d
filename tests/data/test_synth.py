import hashlib
import json
import tarfile

import pytest
from PIL import Image

from data.errors import DataError
from data.synth import describe_stopped, synthesize
from data.tokenizer import Tokenizer

SMALL = dict(train_samples=30, samples_per_shard=12, image_size=32, images_per_class=1, retrieval_images=6)


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
