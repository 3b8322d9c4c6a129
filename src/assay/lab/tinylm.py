"""A small GPT and its trainer, sized for data ablations on a CPU (~0.1–10M parameters).

The model is a standard pre-LayerNorm decoder-only transformer: learned token and position embeddings (the output
layer shares the token embedding), causal self-attention through ``scaled_dot_product_attention``, a GELU MLP. The
trainer is deliberately plain: AdamW, linear warm-up then cosine decay, gradient clipping, a fixed token budget,
a fixed seed for initialisation and data order, and a held-out loss measured on every token of one fixed evaluation
set. What changes between two runs of an ablation is the training data and the seed, nothing else.

torch is imported lazily: ``import assay.lab.tinylm`` stays cheap; the classes are built on first use.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np

#: named model sizes; parameters with a 512 / 2048 vocabulary (untied output) from :meth:`ModelConfig.param_count`
PRESETS: dict[str, dict[str, int]] = {
    "nano": {"d_model": 32, "n_layer": 1, "n_head": 2, "context": 32},  # 0.05M / 0.14M: unit tests, CI ladders
    "micro": {"d_model": 64, "n_layer": 2, "n_head": 2, "context": 64},  # 0.17M / 0.37M: benchmark ladders
    "tiny": {"d_model": 128, "n_layer": 4, "n_head": 4, "context": 128},  # 0.94M / 1.3M
    "small": {"d_model": 256, "n_layer": 6, "n_head": 8, "context": 256},  # 5.1M / 5.8M
    "base": {"d_model": 320, "n_layer": 8, "n_head": 8, "context": 256},  # 10.3M / 11.2M
}


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 2048
    context: int = 128
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    mlp_ratio: int = 4
    tie_embeddings: bool = False  # untied: tiny models leave the unigram plateau much sooner (and seeds agree)

    @classmethod
    def preset(cls, name: str, vocab_size: int = 2048, **overrides: Any) -> "ModelConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(vocab_size=vocab_size, **{**PRESETS[name], **overrides})

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})")

    def param_count(self, embeddings: bool = True) -> int:
        """Trainable parameters (tied output layer counted once); without embeddings it is Kaplan's N."""
        d, L = self.d_model, self.n_layer
        per_layer = 4 * d * d + 2 * self.mlp_ratio * d * d + self.mlp_ratio * d + d + 4 * d  # no qkv/proj biases
        body = L * per_layer + 2 * d  # + final LayerNorm
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return body + (self.vocab_size * d + self.context * d + head if embeddings else 0)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    tokens: int  # training budget: predicted tokens (sequences × context)
    batch_size: int = 4  # small batches, many steps: what tiny budgets (1e5–1e6 tokens) need
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: float = 0.2  # fraction of the steps; long, because a short warm-up on noisy data leaves some seeds
    # stuck on the unigram plateau (bimodal losses across seeds at Q = 0.5)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_points: int = 6  # held-out evaluations along the run (the last one is the final loss)
    threads: int | None = 1  # torch intra-op threads (None: min(2, CPUs)); see torch_threads
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """One finished run: the held-out loss and how it got there."""

    eval_loss: float
    curve: list[dict[str, float]]  # {"step", "tokens", "train_loss"} per step, plus "eval_loss" at eval points
    seconds: float
    params: int
    params_non_embedding: int
    tokens: int  # predicted tokens seen
    unique_tokens: int  # predicted tokens in the training set
    epochs: float
    seed: int
    model: dict[str, int] = field(default_factory=dict)

    def to_dict(self, with_curve: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_curve:
            d.pop("curve")
        return d


# ---------------------------------------------------------------------------------------------------------------
# the model (classes built lazily so importing this module does not import torch)

_CLASSES: dict[str, Any] = {}


def _model_classes() -> dict[str, Any]:
    if _CLASSES:
        return _CLASSES
    import torch
    from torch import nn
    from torch.nn import functional as F

    class CausalSelfAttention(nn.Module):
        def __init__(self, cfg: ModelConfig):
            super().__init__()
            self.n_head = cfg.n_head
            self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
            self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

        def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
            B, T, C = x.shape
            q, k, v = self.qkv(x).split(C, dim=2)
            shape = (B, T, self.n_head, C // self.n_head)
            q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
            if cache is not None:
                if "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
            # a single new query attends to the whole cache; a block of queries (training, prefill) is causal
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
            return self.proj(y.transpose(1, 2).reshape(B, T, C))

    class Block(nn.Module):
        def __init__(self, cfg: ModelConfig):
            super().__init__()
            self.ln1 = nn.LayerNorm(cfg.d_model)
            self.attn = CausalSelfAttention(cfg)
            self.ln2 = nn.LayerNorm(cfg.d_model)
            self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model), nn.GELU(),
                                     nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model))

        def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
            x = x + self.attn(self.ln1(x), cache)
            return x + self.mlp(self.ln2(x))

    class TinyGPT(nn.Module):
        def __init__(self, cfg: ModelConfig):
            super().__init__()
            self.cfg = cfg
            self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.pos = nn.Embedding(cfg.context, cfg.d_model)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
            self.ln_f = nn.LayerNorm(cfg.d_model)
            self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
            self.apply(self._init)
            # residual branches start small so a deep stack begins close to the identity
            for name, p in self.named_parameters():
                if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

        @staticmethod
        def _init(m: nn.Module) -> None:
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

        def forward(self, idx: torch.Tensor, caches: list[dict] | None = None, offset: int = 0) -> torch.Tensor:
            T = idx.shape[1]
            pos = torch.arange(offset, offset + T, device=idx.device)
            x = self.tok(idx) + self.pos(pos)
            for i, block in enumerate(self.blocks):
                x = block(x, None if caches is None else caches[i])
            x = self.ln_f(x)
            return x @ self.tok.weight.T if self.head is None else self.head(x)

        def loss(self, seqs: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
            logits = self(seqs[:, :-1])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seqs[:, 1:].reshape(-1),
                                   reduction=reduction)

    _CLASSES.update(TinyGPT=TinyGPT)
    return _CLASSES


def build_model(cfg: ModelConfig, seed: int = 0) -> Any:
    """A freshly initialised :class:`TinyGPT` (same ``seed`` → same weights)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _model_classes()["TinyGPT"](cfg)


# ---------------------------------------------------------------------------------------------------------------
# training and evaluation


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (``None``: min(2, CPUs)), then restore the previous setting.

    The lab's default is one thread: the models are small, so a second thread gains little on an idle machine,
    while on a busy one (other jobs on the same cores) spinning intra-op threads make a step 4-5x slower.
    Parallelism is better spent on running seeds or datasets side by side.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n if n is not None else min(2, os.cpu_count() or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate(model: Any, seqs: np.ndarray, batch_size: int = 64) -> float:
    """Mean cross-entropy (nats per token) over every predicted token of ``seqs``."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            batch = torch.as_tensor(seqs[i:i + batch_size], device=device)
            total += float(model.loss(batch, reduction="sum"))
            count += batch.shape[0] * (batch.shape[1] - 1)
    model.train(was_training)
    return total / max(count, 1)


def batch_order(n_seqs: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the training sequences for each step: a fresh permutation per epoch, seeded."""
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    parts, have = [], 0
    while have < need:
        parts.append(rng.permutation(n_seqs))
        have += n_seqs
    return np.concatenate(parts)[:need].reshape(steps, batch_size)


def train_lm(model_cfg: ModelConfig, train_seqs: np.ndarray, eval_seqs: np.ndarray, cfg: TrainConfig,
             return_model: bool = False) -> TrainResult | tuple[TrainResult, Any]:
    """Train a fresh model on ``train_seqs`` (``[n, context + 1]`` token ids) for ``cfg.tokens`` predicted tokens
    and report the loss on ``eval_seqs``. Deterministic for a given seed, data, thread count and device."""
    import torch

    if train_seqs.ndim != 2 or train_seqs.shape[1] != model_cfg.context + 1:
        raise ValueError(f"training sequences must be [n, {model_cfg.context + 1}], got {train_seqs.shape}")
    if len(train_seqs) == 0:
        raise ValueError("no training sequences (is the dataset shorter than one context?)")
    if len(eval_seqs) == 0:
        raise ValueError("no evaluation sequences")
    ctx = model_cfg.context
    steps = max(1, math.ceil(cfg.tokens / (cfg.batch_size * ctx)))
    order = batch_order(len(train_seqs), steps, cfg.batch_size, cfg.seed)
    device = resolve_device(cfg.device)
    eval_at = set(np.unique(np.linspace(0, steps, cfg.eval_points + 1)[1:].round().astype(int)))

    with torch_threads(cfg.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg, cfg.seed).to(device)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
        warm = max(1, int(cfg.warmup * steps))

        def lr_at(step: int) -> float:
            if step < warm:
                return cfg.lr * (step + 1) / warm
            progress = (step - warm) / max(1, steps - warm)
            return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

        data = torch.as_tensor(train_seqs)
        curve: list[dict[str, float]] = []
        start = time.perf_counter()
        model.train()
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            batch = data[order[step]].to(device)
            loss = model.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            point: dict[str, float] = {"step": step + 1, "tokens": (step + 1) * cfg.batch_size * ctx,
                                       "train_loss": float(loss.detach())}
            if step + 1 in eval_at:
                point["eval_loss"] = evaluate(model, eval_seqs)
            curve.append(point)
        seconds = time.perf_counter() - start

    tokens = steps * cfg.batch_size * ctx
    unique = len(train_seqs) * ctx
    result = TrainResult(
        eval_loss=curve[-1]["eval_loss"], curve=curve, seconds=seconds, params=model_cfg.param_count(),
        params_non_embedding=model_cfg.param_count(embeddings=False), tokens=tokens, unique_tokens=unique,
        epochs=tokens / unique, seed=cfg.seed, model=model_cfg.to_dict())
    return (result, model) if return_model else result


def sample_tokens(model: Any, n_tokens: int, start_id: int, seed: int = 0, temperature: float = 1.0,
                  batch_size: int = 64, threads: int | None = 1) -> np.ndarray:
    """Ancestral samples from ``model``: sequences of ``context`` tokens, each started from ``start_id`` (the
    end-of-document token), concatenated into one stream of at least ``n_tokens`` tokens."""
    import torch

    ctx = model.cfg.context
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    have = 0
    with torch.no_grad(), torch_threads(threads):
        while have < n_tokens:
            caches: list[dict] = [{} for _ in model.blocks]
            tok = torch.full((batch_size, 1), start_id, dtype=torch.long, device=device)
            seq = [tok]
            for pos in range(ctx - 1):
                logits = model(tok, caches, offset=pos)[:, -1, :] / max(temperature, 1e-6)
                probs = torch.softmax(logits.float(), dim=-1).cpu()
                tok = torch.multinomial(probs, 1, generator=gen).to(device)
                seq.append(tok)
            block = torch.cat(seq, dim=1).cpu().numpy().astype(np.int32)
            out.append(block.reshape(-1))
            have += block.size
    model.train(was_training)
    return np.concatenate(out)
