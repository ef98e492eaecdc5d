"""The task registry (eval/tasks.py): a type is one class with `@register_task`; `evaluate` runs any mix of task
objects and short forms, names results TYPE/NAME/METRIC, and holds a type to the metrics it declares."""
import pytest
import torch
from PIL import Image

from data.decode import square_pixels
from eval import EvalError, Pixels, Task, evaluate, get_task, register_task, task_types
from tests.eval.fixtures import BLUE, GREEN, RED, SIZE, solid, write_image_folder
from tests.eval.toy import ToyColourModel, ToyTokenizer


class ImageCount(Task):
    """Counts the images of a folder (opened as a zero-shot set), and may say more than it declares."""

    metrics = ("num_images",)

    def __init__(self, path: str, extra: bool = False):
        self.path, self.extra = path, extra

    def open(self, pixels):
        return get_task("zeroshot")(self.path).open(pixels)

    def run(self, model, tokenizer, data, runtime, desc):
        return {"num_images": float(len(data.images)), **({"surprise": 1.0} if self.extra else {})}


register_task("image_count_for_tests")(ImageCount)


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "f", {"red": [solid(RED)] * 2, "blue": [solid(BLUE)]})


def run(tasks=(), **short):
    return evaluate(ToyColourModel(), ToyTokenizer(), tasks, image_size=SIZE, workers=0, progress=False, **short)


def test_tasks_of_two_types_may_share_a_name_and_each_is_named_by_its_type(folder):
    metrics = run([("f", ImageCount(str(folder)))], zeroshot={"f": folder})
    assert metrics["image_count_for_tests/f/num_images"] == 3.0 and metrics["zeroshot/f/top1"] == 1.0
    assert {"zeroshot", "retrieval", "image_count_for_tests"} <= set(task_types())


def test_two_tasks_of_one_type_may_not_share_a_name(folder):
    with pytest.raises(EvalError, match="two zeroshot tasks are named 'f'"):
        run([("f", get_task("zeroshot")(str(folder)))], zeroshot={"f": folder})


def test_a_task_that_reports_a_metric_it_does_not_declare_is_refused(folder):
    with pytest.raises(EvalError, match=r"task type 'image_count_for_tests' reported surprise, which it does not "
                                        r"declare \(its metrics: num_images\)"):
        run({"f": ImageCount(str(folder), extra=True)})


def test_the_registry_refuses_a_taken_name_a_type_without_metrics_and_names_the_known_types():
    with pytest.raises(ValueError, match="task type 'zeroshot' is already registered"):
        register_task("zeroshot")(ImageCount)
    with pytest.raises(ValueError, match="declares no metrics"):
        register_task("mute")(type("Mute", (Task,), {"metrics": ()}))
    with pytest.raises(EvalError, match=r"unknown task type 'zeroshoot'; did you mean 'zeroshot'\?"):
        get_task("zeroshoot")


def test_a_task_opens_its_images_as_the_model_takes_them_cropped_or_squashed(tmp_path):
    wide = Image.new("RGB", (3 * SIZE, SIZE), GREEN)
    wide.paste(solid(RED), (0, 0))
    folder = write_image_folder(tmp_path / "wide", {"green": [wide]})
    for resize in ("crop", "squash"):
        [(pixels, label)] = list(get_task("zeroshot")(str(folder)).open(Pixels(SIZE, resize)).images)
        assert label == 0 and torch.equal(pixels, square_pixels(wide, SIZE, resize))
    assert not torch.equal(square_pixels(wide, SIZE, "crop"), square_pixels(wide, SIZE, "squash"))
