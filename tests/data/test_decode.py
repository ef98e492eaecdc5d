import io
import json

import pytest
import torch
from PIL import Image

from data.decode import CROP_RATIO, ImageTransform, decode, random_resized_crop_box, square_pixels
from data.validate import BadSample, decode_image, sample_captions
from tests.data.loader_fixtures import image_bytes


def test_jpeg_decodes_in_draft_mode_only_when_twice_the_need():
    big = image_bytes((10, 200, 30), size=(2048, 1536), fmt="JPEG")
    assert decode_image(big, "big", 224).size == (512, 384)  # 1536 // 224 = 6 -> scale 1/4, short side >= 224
    assert decode_image(big, "big", 800).size == (2048, 1536)
    assert decode_image(big, "big").size == (2048, 1536)  # evaluation's full decode
    assert decode_image(image_bytes((1, 2, 3), size=(2048, 1536)), "png", 224).size == (2048, 1536)  # no draft


def test_train_needs_enough_pixels_for_the_smallest_crop():
    transform = ImageTransform(224, train=True, crop_scale=(0.9, 1.0))
    needed = transform.needed_short_side()
    smallest_crop_side = needed * (0.9 * CROP_RATIO[0]) ** 0.5
    assert 224 <= smallest_crop_side < 225
    assert ImageTransform(224, train=False, crop_scale=(0.9, 1.0)).needed_short_side() == 224


def test_crop_boxes_stay_inside_and_follow_the_scale_range():
    g = torch.Generator().manual_seed(0)
    areas = []
    for _ in range(300):
        top, left, h, w = random_resized_crop_box(60, 80, (0.5, 1.0), g)
        assert 0 <= top <= 60 - h and 0 <= left <= 80 - w and h > 0 and w > 0
        areas.append(h * w / (60 * 80))
    assert 0.45 < min(areas) < 0.6 and max(areas) <= 1.0 and 0.65 < sum(areas) / len(areas) < 0.85
    same = [random_resized_crop_box(60, 80, (0.5, 1.0), torch.Generator().manual_seed(7)) for _ in range(2)]
    assert same[0] == same[1]


def test_eval_transform_is_resize_and_centre_crop():
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (20, 0, 40, 20))  # red middle third, blue sides
    out = ImageTransform(20, train=False, crop_scale=(1.0, 1.0))(image, torch.Generator())
    assert out.dtype == torch.uint8 and out.shape == (3, 20, 20)
    assert out[0].float().mean() > 250 and out[2].float().mean() < 5


def test_decode_draws_one_caption_per_visit():
    members = {"png": image_bytes((9, 9, 9)), "txt": b"first\n\n  second  \n"}
    transform = ImageTransform(8, train=True, crop_scale=(0.9, 1.0))
    drawn = {decode(members, transform, torch.Generator().manual_seed(i))[1] for i in range(20)}
    assert drawn == {"first", "second"}
    image, _ = decode(members, transform, torch.Generator())
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and int(image[1, 4, 4]) == 9


@pytest.mark.parametrize("members, expected", [
    ({"txt": b"a\nb", "json": b'{"caption": "ignored"}'}, ["a", "b"]),
    ({"json": json.dumps({"caption": " c "}).encode()}, ["c"]),
    ({"json": json.dumps({"captions": ["d", "", "e"], "caption": "x"}).encode()}, ["d", "e"]),
])
def test_caption_sources(members, expected):
    assert sample_captions(members) == expected


@pytest.mark.parametrize("members, reason", [
    ({"txt": b"a"}, "no_image"),
    ({"png": image_bytes((1, 1, 1))}, "missing_caption"),
    ({"png": image_bytes((1, 1, 1)), "json": b'{"key": "1"}'}, "missing_caption"),
    ({"png": image_bytes((1, 1, 1)), "txt": b" \n\n"}, "empty_caption"),
    ({"png": image_bytes((1, 1, 1)), "json": b'{"captions": []}'}, "empty_caption"),
    ({"png": image_bytes((1, 1, 1)), "txt": b"caf\xe9"}, "non_utf8_caption"),
    ({"png": image_bytes((1, 1, 1)), "json": b'{"caption": '}, "corrupt_json"),
    ({"jpg": b"\xff\xd8 not really a jpeg", "txt": b"a"}, "corrupt_image"),
    ({"jpg": image_bytes((1, 1, 1), (64, 64), "JPEG")[:300], "txt": b"a"}, "corrupt_image"),
])
def test_bad_samples_are_skipped_with_their_reason(members, reason):
    with pytest.raises(BadSample) as info:
        decode(members, ImageTransform(8, train=True, crop_scale=(0.9, 1.0)), torch.Generator())
    assert info.value.reason == reason


def test_palette_and_webp_images_become_rgb():
    buffer = io.BytesIO()
    Image.new("P", (10, 10), 0).save(buffer, "PNG", transparency=0)
    assert decode_image(buffer.getvalue(), "palette").mode == "RGB"
    webp = decode_image(image_bytes((250, 5, 5), fmt="WEBP"), "webp")
    assert webp.mode == "RGB" and webp.getpixel((3, 3))[0] > 200


def test_a_file_decodes_like_its_bytes_and_errors_name_the_image(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(image_bytes((10, 200, 30), fmt="JPEG"))
    assert decode_image(path, str(path)).tobytes() == decode_image(path.read_bytes(), "x").tobytes()
    with pytest.raises(BadSample, match=r"corrupt image: cannot decode shard.tar:k: not in an image format"):
        decode_image(b"not an image", "shard.tar:k")
    with pytest.raises(BadSample, match=r"missing file: cannot read .*gone.png: No such file") as info:
        decode_image(tmp_path / "gone.png", str(tmp_path / "gone.png"))
    assert info.value.reason == "missing_file"


def test_square_pixels_crops_the_centre_or_squashes_the_whole_image():
    """A 12 x 4 image, thirds red | green | blue: the centre crop is all green; squashed, all three remain."""
    image = Image.new("RGB", (12, 4), (0, 255, 0))
    image.paste(Image.new("RGB", (4, 4), (255, 0, 0)), (0, 0))
    image.paste(Image.new("RGB", (4, 4), (0, 0, 255)), (8, 0))
    cropped, squashed = square_pixels(image, 4, "crop"), square_pixels(image, 4, "squash")
    assert cropped.shape == squashed.shape == (3, 4, 4)
    assert (cropped[1] > 200).all() and (cropped[0] < 50).all() and (cropped[2] < 50).all()
    assert squashed[0, :, 0].min() > 150 and squashed[2, :, -1].min() > 150  # red left, blue right
    unaugmented = ImageTransform(4, train=False, crop_scale=(1.0, 1.0))(image, torch.Generator())
    torch.testing.assert_close(unaugmented, cropped)  # the loader without augmentation: the centre crop
    with pytest.raises(ValueError, match="resize mode 'stretch' is not one of crop, squash"):
        square_pixels(image, 4, "stretch")
