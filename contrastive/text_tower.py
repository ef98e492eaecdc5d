"""The text tower: token embedding + learned positions + pre-LN transformer blocks + final LayerNorm + pooling.

Token rows are `<sot> tokens... <eot> <pad>...` with a dedicated pad id, so the end token sits at
`(ids != pad_id).sum(1) - 1`. Attention is causal (CLIP) or bidirectional, with the pad keys masked or, as
SigLIP's towers do, attended to (`mask_pad_keys`); with causal attention no real token ever sees a pad, since
pads come after the end token. The activation (GELU, QuickGELU, tanh GELU), the LayerNorms' epsilon and the projection's
bias are the config's, so the towers of CLIP, OpenCLIP and SigLIP can each be expressed.

Two outputs, chosen by what the loss scores:
- "embedding": pooled state -> linear projection (bias only with projection_bias) -> L2-normalised [B, D].
- "pooled_state": the pooled state before any projection, [B, width], for Llip (the loss projects it).
"""
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from contrastive.config import TextTowerConfig
from data.tokenizer import Tokenizer

TextOutput = Literal["embedding", "pooled_state"]


def end_positions(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    return (tokens != pad_id).sum(1) - 1


def argmax_positions(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Each row's first highest token id (OpenCLIP's and Hugging Face's CLIP: the end token is the last id)."""
    return tokens.argmax(dim=1)


# The pooling that reads one position per row: how that position is found, from the token ids and the pad id.
POSITIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"eot": end_positions, "argmax": argmax_positions}


def pool_at(positions: Callable[[torch.Tensor, int], torch.Tensor]) -> Callable[..., torch.Tensor]:
    return lambda x, tokens, pad_id: x[torch.arange(x.shape[0], device=x.device), positions(tokens, pad_id)]


def pool_last(x: torch.Tensor, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The final position of the padded row (big_vision's "last"); meant for bidirectional attention."""
    return x[:, -1]


def pool_mean(x: torch.Tensor, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    weights = (tokens != pad_id).unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1)


# (states [B, L, width], token ids [B, L], pad id) -> [B, width]
POOLING: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    **{name: pool_at(positions) for name, positions in POSITIONS.items()}, "last": pool_last, "mean": pool_mean}


def text_tokenizer(tokenizer_json: str, cfg: TextTowerConfig, source: str) -> Tokenizer:
    """The tokenizer that makes the rows of ids this tower was configured for (its context, cleaning, start token
    and pad id)."""
    return Tokenizer(tokenizer_json, cfg.context_length, source, clean=cfg.clean, start_token=cfg.start_token,
                     pad_id=cfg.pad_id)


class QuickGELU(nn.Module):
    """x sigmoid(1.702 x): the activation OpenAI trained CLIP with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU, "quick_gelu": QuickGELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}


class TextBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x)).

    Queries and values have biases, keys none (unless `key_bias`, for imported towers): a key bias adds the same
    q.b to every logit of a query, which softmax ignores, so its true gradient is zero and Adam would only amplify
    rounding noise into updates.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, activation: str = "gelu", norm_eps: float = 1e-5,
                 key_bias: bool = False):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(width, eps=norm_eps)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.k_bias = nn.Parameter(torch.zeros(width)) if key_bias else None  # only to carry an imported one
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.attn_out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width, eps=norm_eps)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        batch, length, width = x.shape
        key_bias = torch.zeros_like(self.q_bias) if self.k_bias is None else self.k_bias
        qkv_bias = torch.cat((self.q_bias, key_bias, self.v_bias))
        qkv = F.linear(self.attn_norm(x), self.qkv.weight, qkv_bias)
        q, k, v = qkv.view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=causal)
        x = x + self.attn_out(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.mlp_norm(x))


class TextTower(nn.Module):
    def __init__(self, cfg: TextTowerConfig, vocab_size: int, pad_id: int, embed_dim: int,
                 output: TextOutput = "embedding"):
        super().__init__()
        if output not in ("embedding", "pooled_state"):
            raise ValueError(f"the text tower outputs an embedding or its pooled state, not {output!r}")
        if cfg.width % cfg.heads:
            raise ValueError(f"model.text.width={cfg.width} must be divisible by model.text.heads={cfg.heads}")
        if not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id={pad_id} is not a token id of a vocabulary of {vocab_size}")
        self.context_length = cfg.context_length
        self.pad_id = pad_id
        self.causal = cfg.causal
        self.mask_pad_keys = cfg.mask_pad_keys
        self.pool = POOLING[cfg.pool]
        self.pooled_position = POSITIONS.get(cfg.pool)
        self.grad_checkpointing = False
        self.token_embedding = nn.Embedding(vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList(TextBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.activation, cfg.norm_eps,
                                              cfg.key_bias) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.projection = (nn.Linear(cfg.width, embed_dim, bias=cfg.projection_bias) if output == "embedding"
                           else None)
        self._init_clip_style(cfg.width, cfg.depth)

    def _init_clip_style(self, width: int, depth: int) -> None:
        """CLIP's text init: residual output layers scaled down with depth so the stream starts near identity."""
        residual_std = width ** -0.5 * (2 * depth) ** -0.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.blocks:
            nn.init.normal_(block.qkv.weight, std=width ** -0.5)
            nn.init.normal_(block.attn_out.weight, std=residual_std)
            nn.init.normal_(block.mlp[0].weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp[2].weight, std=residual_std)
            for linear in (block.attn_out, block.mlp[0], block.mlp[2]):
                nn.init.zeros_(linear.bias)
        if self.projection is not None:
            nn.init.normal_(self.projection.weight, std=width ** -0.5)
            if self.projection.bias is not None:
                nn.init.zeros_(self.projection.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """token ids [B, L] (L <= context_length) -> [B, D] (embedding) or [B, width] (pooled_state).

        In eval mode the trailing columns that are padding in every row are dropped first: no real token attends
        to a pad (causal attention, or pad keys masked), so the output is the same for less work; zero-shot
        prompts fill a few of 77 positions. Not in training, where a data-dependent shape would cost a host sync
        per step and recompiles under torch.compile, nor for "last" pooling, which reads the padded row's end,
        nor where real tokens attend to the pads (mask_pad_keys off).
        """
        pads_unseen = self.causal or self.mask_pad_keys
        if not self.training and self.pool is not pool_last and pads_unseen:
            # Up to the last non-pad column of any row (a real token may share the pad's id: OpenCLIP pads CLIP
            # with 0, which is "!", so counting non-pads could cut real tokens), and at least to the pooled
            # position (Hugging Face pads CLIP with the end token it pools at).
            columns = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
            keep = ((tokens != self.pad_id) * columns).amax()
            if self.pooled_position is not None:
                keep = torch.maximum(keep, self.pooled_position(tokens, self.pad_id).amax() + 1)
            tokens = tokens[:, :int(keep)]
        pooled = self.pool(self.hidden_states(tokens), tokens, self.pad_id)
        return pooled if self.projection is None else F.normalize(self.projection(pooled), dim=-1)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every position's state after the final LayerNorm, [B, L, width]."""
        if tokens.dim() != 2 or tokens.dtype != torch.long or tokens.shape[1] > self.context_length:
            raise ValueError(f"text tower expects token ids as a long tensor [B, L] with L <= "
                             f"{self.context_length}, got {tokens.dtype} {list(tokens.shape)}")
        key_mask = (tokens != self.pad_id)[:, None, None, :] if not self.causal and self.mask_pad_keys else None
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, key_mask, self.causal, use_reentrant=False)
            else:
                x = block(x, key_mask, self.causal)
        return self.final_norm(x)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"positional_embedding"}
