"""A loss and an evaluation task from outside the repository: one module each (`@losses.register`,
`@eval.register_task`), named in the config's `plugins:`, imported before the registries are read."""
import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from contrastive.checkpoint import Checkpointer, load_checkpoint
from contrastive.train import train
from tests.contrastive.tiny_run import tiny_config
from tests.eval.fixtures import BLUE, RED, solid, write_image_folder

PLUGIN = '''
"""A new loss: SigLIP's pairwise sigmoid over dot-product scores, with a temperature that is not learned."""
import torch
from typing import Literal

import losses
from losses.similarity import DotSimilarity


@losses.register("fixed_temperature_sigmoid")
class FixedTemperatureSigmoid(losses.ContrastiveLoss):
    def __init__(self, scale: float = 10.0, exchange: Literal["ring", "all_gather"] = "ring"):
        super().__init__(DotSimilarity(), "sigmoid", exchange, scale, -scale)
        self.logit_scale.requires_grad_(False)
'''


def test_a_loss_registered_by_a_plugin_module_trains_and_evaluates(tmp_path):
    (tmp_path / "my_losses.py").write_text(textwrap.dedent(PLUGIN))
    cfg = tiny_config(tmp_path)
    run_dir = tmp_path / "run"
    args = [f"data.shards={cfg.data.shards[0]}", f"data.tokenizer={cfg.data.tokenizer}", "data.workers=0",
            "data.shuffle_buffer=16", "train.batch_size=8", "train.steps=2", "train.precision=fp32",
            "optim.warmup_steps=1", f"run_dir={run_dir}", "plugins=[my_losses]",
            "loss.name=fixed_temperature_sigmoid", "loss.scale=4.0", "loss.exchange=all_gather",
            *[f"model.{k}={json.dumps(v)}" for k, v in [("embed_dim", 16), ("image.image_size", 32),
              ("image.kwargs", {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}),
              ("text.context_length", 12), ("text.width", 32), ("text.depth", 1), ("text.heads", 2)]]]
    # The plugin is found in the working directory, as `python -m` would find it; nothing is installed.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    train = subprocess.run([sys.executable, "-m", "contrastive", "train", *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    assert "training finished at step 2" in train.stdout
    state = load_checkpoint(Checkpointer(run_dir).latest())
    assert state["model"]["loss.logit_scale"].item() == torch.tensor(4.0).log().item()  # not learned: unchanged
    assert state["model"]["loss.logit_bias"].item() != -4.0  # learned
    saved = (run_dir / "config.yaml").read_text()
    assert "plugins:\n- my_losses\n" in saved and "name: fixed_temperature_sigmoid\n  scale: 4.0\n" in saved
    unknown = subprocess.run([sys.executable, "-m", "contrastive", "train", *args, "loss.tau=5", "--check"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2
    assert unknown.stderr == ("error: config error: loss: loss 'fixed_temperature_sigmoid' does not take tau; its "
                              "arguments: scale=10.0, exchange='ring'\n")


TASK_PLUGIN = '''
"""A new evaluation task: how long the model's image representations are, over an image folder."""
import torch

from eval import Task, get_task, register_task


@register_task("embedding_norm")
class EmbeddingNorm(Task):
    metrics = ("num_images", "mean_norm")

    def __init__(self, path: str, split: str = "test"):
        self.path, self.split = path, split

    def open(self, pixels):
        return get_task("zeroshot")(self.path, split=self.split).open(pixels)  # any image folder

    def run(self, model, tokenizer, data, runtime, desc):
        norms = torch.cat([runtime.encode_images(model, images).flatten(1).norm(dim=1).cpu()
                           for images, _ in runtime.loader(data.images)])
        return {"num_images": float(len(norms)), "mean_norm": norms.mean().item()}
'''


def test_an_evaluation_task_registered_by_a_plugin_module_runs_from_the_config(tmp_path):
    (tmp_path / "my_tasks.py").write_text(textwrap.dedent(TASK_PLUGIN))
    write_image_folder(tmp_path / "folder", {"red": [solid(RED)] * 3, "blue": [solid(BLUE)] * 2})
    cfg = tiny_config(tmp_path, "train.steps=1")
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    task = f"eval.tasks.norms={{type: embedding_norm, path: {tmp_path / 'folder'}}}"
    done = subprocess.run([sys.executable, "-m", "contrastive", "eval", cfg.run_dir, "plugins=[my_tasks]", task],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((Path(cfg.run_dir) / "eval" / "step_000001.json").read_text())["metrics"]
    assert metrics["embedding_norm/norms/num_images"] == 5
    assert abs(metrics["embedding_norm/norms/mean_norm"] - 1) < 1e-5  # CLIP's image embeddings are unit vectors
    wrong = subprocess.run([sys.executable, "-m", "contrastive", "eval", cfg.run_dir, "plugins=[my_tasks]",
                            task.replace("}", ", templates: simple}")], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert wrong.returncode == 2
    assert wrong.stderr == ("error: config error: eval.tasks.norms: task type 'embedding_norm' does not take "
                            "templates; its arguments: path, split='test'\n")
