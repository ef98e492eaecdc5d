import pytest
import torch

from contrastive.config import TextTowerConfig
from contrastive.text_tower import TextTower

VOCAB, PAD, SOT, EOT = 50, 0, 1, 2


def tiny_tower(output: str = "embedding", **overrides) -> TextTower:
    torch.manual_seed(0)
    cfg = TextTowerConfig(**{"context_length": 12, "width": 32, "depth": 2, "heads": 4, **overrides})
    return TextTower(cfg, vocab_size=VOCAB, pad_id=PAD, embed_dim=16, output=output)


def row(words: list[int], length: int = 12) -> list[int]:
    ids = [SOT, *words, EOT]
    return ids + [PAD] * (length - len(ids))


def random_readout(out: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient reaches every input direction (a plain sum of a normalised output would not)."""
    return (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum()


def batch(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def test_embedding_is_normalised_and_pooled_state_is_unprojected():
    tokens = batch(row([5, 6, 7]), row([8]))
    embedding = tiny_tower("embedding")(tokens)
    assert embedding.shape == (2, 16)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))
    state_tower = tiny_tower("pooled_state")
    assert state_tower.projection is None
    assert state_tower(tokens).shape == (2, 32)


def test_causal_later_token_does_not_change_earlier_positions():
    tower = tiny_tower(causal=True).eval()
    a, b = batch(row([5, 6, 7, 8])), batch(row([5, 6, 9, 8]))  # differ at position 3
    ha, hb = tower.hidden_states(a), tower.hidden_states(b)
    torch.testing.assert_close(ha[:, :3], hb[:, :3])
    assert (ha[:, 3:6] - hb[:, 3:6]).abs().amax() > 1e-3


def test_bidirectional_later_token_changes_earlier_positions():
    tower = tiny_tower(causal=False).eval()
    ha = tower.hidden_states(batch(row([5, 6, 7, 8])))
    hb = tower.hidden_states(batch(row([5, 6, 9, 8])))
    assert (ha[:, :3] - hb[:, :3]).abs().amax(dim=-1).min() > 1e-3


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("pool", ["eot", "mean"])
def test_padding_length_does_not_change_the_output(causal: bool, pool: str):
    tower = tiny_tower(causal=causal, pool=pool).eval()
    short = tower(batch(row([5, 6, 7], length=6), row([8], length=6)))
    long = tower(batch(row([5, 6, 7], length=12), row([8], length=12)))
    torch.testing.assert_close(short, long)


@pytest.mark.parametrize("causal, pool, eval_length", [(True, "eot", 5), (False, "mean", 5), (False, "last", 12)])
def test_eval_mode_drops_all_pad_columns_without_changing_the_output(causal: bool, pool: str, eval_length: int):
    tower = tiny_tower(causal=causal, pool=pool)
    seen: list[int] = []
    tower.blocks[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    tokens = batch(row([5, 6, 7]), row([8]))  # 12 columns, the longest row uses 5
    trained = tower.train()(tokens)
    evaluated = tower.eval()(tokens)
    assert seen == [12, eval_length]  # "last" pooling reads the padded end, so it keeps every column
    torch.testing.assert_close(evaluated, trained)


def test_pooling_variants_select_end_token_last_position_and_non_pad_mean():
    tokens = batch(row([5, 6, 7]), row([8]))
    not_pad = (tokens != PAD).unsqueeze(-1).float()
    for pool, expected in [
        ("eot", lambda h: torch.stack([h[0, 4], h[1, 2]])),
        ("last", lambda h: h[:, -1]),
        ("mean", lambda h: (h * not_pad).sum(1) / not_pad.sum(1)),
    ]:
        tower = tiny_tower("pooled_state", causal=False, pool=pool).eval()
        torch.testing.assert_close(tower(tokens), expected(tower.hidden_states(tokens)))


def test_grad_checkpointing_gives_the_same_gradients():
    tokens = batch(row([5, 6, 7]), row([8, 9]))
    grads = []
    for checkpointing in (False, True):
        tower = tiny_tower(causal=False)
        tower.set_grad_checkpointing(checkpointing)
        random_readout(tower(tokens)).backward()
        grads.append({n: p.grad for n, p in tower.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    assert grads[0]["blocks.0.qkv.weight"].abs().amax() > 1e-4
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_every_parameter_gets_a_gradient():
    for output in ("embedding", "pooled_state"):
        tower = tiny_tower(output)
        random_readout(tower(batch(row([5, 6, 7]), row([8])))).backward()
        missing = [n for n, p in tower.named_parameters() if p.grad is None or not p.grad.any()]
        assert not missing, f"{output}: no gradient for {missing}"


def test_clip_style_init_scales():
    tower = TextTower(TextTowerConfig(context_length=77, width=256, depth=8, heads=4), VOCAB * 20, PAD, 64)
    residual_std = 256 ** -0.5 * 16 ** -0.5
    assert tower.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert tower.positional_embedding.std().item() == pytest.approx(0.01, rel=0.05)
    assert tower.blocks[0].attn_out.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert tower.blocks[0].mlp[0].weight.std().item() == pytest.approx(512 ** -0.5, rel=0.05)
    assert tower.blocks[0].q_bias.abs().sum().item() == 0 and tower.blocks[0].qkv.bias is None


def test_bad_input_is_a_clear_error():
    tower = tiny_tower()
    with pytest.raises(ValueError, match=r"L <= 12"):
        tower(torch.ones(2, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="long tensor"):
        tower(torch.ones(2, 5))
    with pytest.raises(ValueError, match="divisible by model.text.heads"):
        TextTower(TextTowerConfig(width=30, heads=4), VOCAB, PAD, 16)
    with pytest.raises(ValueError, match="pad_id=50"):
        TextTower(TextTowerConfig(width=32, heads=4, depth=1), VOCAB, VOCAB, 16)


def test_argmax_pooling_reads_the_position_of_the_highest_token_id():
    tokens = batch([SOT, 5, 49, 6, EOT, PAD, PAD, PAD, PAD, PAD, PAD, PAD], row([8]))
    tower = tiny_tower("pooled_state", pool="argmax").eval()
    states = tower.hidden_states(tokens)
    torch.testing.assert_close(tower(tokens), torch.stack([states[0, 2], states[1, 1]]))


def test_bidirectional_attention_without_pad_masking_sees_the_pads():
    masked, unmasked = tiny_tower(causal=False, pool="mean"), tiny_tower(causal=False, pool="mean", mask_pad_keys=False)
    short, long = batch(row([5, 6, 7], length=6)), batch(row([5, 6, 7], length=12))
    torch.testing.assert_close(masked.eval()(short), masked(long))
    assert (unmasked.eval()(short) - unmasked(long)).abs().amax() > 1e-4  # more pads, another output
    seen: list[int] = []
    unmasked.blocks[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    unmasked(long)
    assert seen == [12]  # the pad columns are not dropped in eval mode: they matter


def test_activation_norm_eps_and_projection_bias_are_the_configs():
    tower = tiny_tower(activation="quick_gelu", norm_eps=1e-6, projection_bias=True)
    activation = tower.blocks[0].mlp[1]
    x = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(activation(x), x * torch.sigmoid(1.702 * x))
    assert {m.eps for m in tower.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    assert tower.projection.bias is not None and not tower.projection.bias.any()  # starts at zero
    assert tiny_tower().projection.bias is None and isinstance(tiny_tower().blocks[0].mlp[1], torch.nn.GELU)


def test_eval_mode_keeps_every_column_up_to_the_last_real_token_even_one_with_the_pad_id():
    """OpenCLIP pads CLIP's ids with 0, which is also "!": a row `<sot> a ! ! ! <eot>` must keep all six columns."""
    tower = tiny_tower("pooled_state", pool="argmax")
    tokens = batch([SOT, 5, PAD, PAD, PAD, 49, PAD, PAD, PAD, PAD, PAD, PAD])
    seen: list[int] = []
    tower.blocks[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    torch.testing.assert_close(tower.eval()(tokens), tower.train()(tokens))
    assert seen == [6, 12]


def test_a_key_bias_changes_no_output():
    """Imported towers carry the peer's key bias (model.text.key_bias); softmax ignores it."""
    tower = tiny_tower(key_bias=True).eval()
    tokens = torch.tensor([row([5, 6, 7]), row([8])])
    before = tower(tokens)
    with torch.no_grad():
        for block in tower.blocks:
            block.k_bias.normal_(0, 3.0)
    torch.testing.assert_close(tower(tokens), before, atol=1e-5, rtol=0)
