"""The autoregressive family: a decoder-only Transformer over subpixels in raster order.

An image becomes a sequence of D = C*H*W tokens in 0..255, row by row, pixel by pixel,
and within a pixel channel by channel (R, G, B). A start token (id 256) shifts the
sequence right, so the logits at position i give p(x_i | x_<i) and the cross-entropy is
the exact negative log-likelihood. Sampling decodes one token per step with a
preallocated key/value cache; ``use_cache=False`` recomputes the prefix every step and is
kept as the reference.

Class-conditional (``conditional=True``): a class embedding (one row per class and a last,
null row for "no class") is added to the input of every position, so each token is
predicted given the class directly rather than through attention back to one class token.
Training drops a share ``label_dropout`` of the labels to the null label, so one model
learns p(x | y) and p(x); the ``guidance`` option of the sampler mixes their logits
(classifier-free guidance), l_null + w (l_y - l_null).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import progress
from ..core import (
    ConfigError,
    GenerativeModel,
    ModelSpec,
    adam,
    eval_mode,
    option_flag,
    option_number,
)
from ..nn.attention import TransformerBlock, modulate, new_kv_cache
from ..nn.graphs import NOISE_BYTES, capture, graph_mode, model_graphs, weights_key
from ..nn.likelihood import LN2
from ..options import SamplerOptions, check_range

VOCAB = 256  # subpixel values; the start token is id VOCAB, the embedding has VOCAB + 1 rows
POS_EMBEDDINGS = ("learned", "factorized")
#: the sampler's classifier-free guidance of a class-conditional model when none is given
#: (docs/models.md has the guidance sweep it was chosen from)
DEFAULT_GUIDANCE = 3.0


@dataclass
class ARTransformerConfig:
    """Size and optimiser of the Transformer; the defaults train in minutes on a CPU at 28x28."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # learned: one free vector per position; factorized: row + column + channel embeddings
    pos_embedding: Literal["learned", "factorized"] = "learned"
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    betas: tuple[float, ...] = (0.9, 0.95)
    # class-conditional: a class embedding added at every position (num_classes is
    # filled from the dataset's labels by ``zoo.create``); label_dropout trains the null label
    conditional: bool = False
    num_classes: int | None = None
    label_dropout: float = 0.1


@dataclass(frozen=True)
class Tokens(SamplerOptions):
    """Decoding token by token: ``temperature`` scales the logits (0 = greedy), ``top_k``
    keeps the k likeliest values per subpixel (None: all). ``guidance`` w (a
    class-conditional model only) samples from the logits l_null + w (l_y - l_null): 0 is
    unconditional, 1 (default) the plain conditional, > 1 classifier-free guidance (the
    conditional and null passes batched as one); temperature and top-k apply after it."""

    name: ClassVar[str] = "default"
    headline: ClassVar = (("temperature", "T {:g}"),)

    temperature: float = 1.0
    top_k: int | None = None
    guidance: float = 1.0

    def canonical(self) -> dict:
        # guidance at its default stays out, so rows and graph keys written before it
        # existed (every unconditional row) keep their key
        out = super().canonical()
        if out["guidance"] == 1.0:
            del out["guidance"]
        return out

    def bind(self, model) -> Tokens:
        if self.top_k is not None and self.top_k > model.vocab:
            raise ConfigError(f"top_k must be in 1..{model.vocab} (or None for all), got "
                              f"{self.top_k}")
        if self.guidance != 1.0 and not model.conditional:
            raise ConfigError(f"guidance={self.guidance:g} needs a class-conditional model; "
                              f"{model.name} is unconditional (train with conditional=true)")
        return self

    def check(self) -> None:
        if not (self.guidance >= 0 and math.isfinite(self.guidance)):
            raise ConfigError(f"guidance must be a finite number >= 0 (0 = unconditional, "
                              f"1 = conditional), got {self.guidance}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), "
                              f"got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1 (or None for all), got {self.top_k}")


class _TokenPicker:
    """Draws the next token from logits: greedy, or Gumbel-max with temperature and top-k.

    The Gumbel noise goes into one buffer allocated up front (on the generator's device),
    so a step allocates nothing for randomness and never syncs with the host.
    """

    def __init__(self, batch: int, temperature: float, top_k: int | None, generator,
                 device: torch.device, vocab: int = VOCAB):
        self.greedy = temperature == 0.0 or top_k == 1
        self.inv_t = 1.0 / temperature if temperature > 0 else 0.0
        self.top_k = top_k if top_k is not None and top_k < vocab else None
        self.generator = generator
        self.noise = torch.empty(
            batch, vocab, device=generator.device if generator is not None else device
        )

    def __call__(self, logits: Tensor) -> Tensor:
        if self.greedy:
            return logits.argmax(-1)
        g = self.noise.exponential_(generator=self.generator)
        if g.device != logits.device:
            g = g.to(logits.device, non_blocking=True)
        return self.choose(logits, g)

    def choose(self, logits: Tensor, g: Tensor | None) -> Tensor:
        """The token for ``logits`` given Exp(1) noise ``g`` (unused when greedy)."""
        if self.greedy:
            return logits.argmax(-1)
        if self.top_k is not None:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        return (logits * self.inv_t - g.log()).argmax(-1)


class ARTransformer(GenerativeModel):
    """Decoder-only Transformer with 256-way softmax per subpixel (exact likelihood)."""

    family = "autoregressive"
    likelihood = "exact"
    color = "#2ca02c"
    Config = ARTransformerConfig
    samplers = (Tokens,)

    @property
    def default_sampler(self) -> dict:
        """A class-conditional model's sampler guides by ``DEFAULT_GUIDANCE`` unless told."""
        return {"guidance": DEFAULT_GUIDANCE} if self.conditional else {}

    def __init__(self, config: ARTransformerConfig, image_shape):
        super().__init__(config, image_shape)
        cfg = config
        for key, least in (("dim", 1), ("depth", 1), ("heads", 1), ("warmup_steps", 0)):
            value = getattr(cfg, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{key} must be an integer >= {least}, got {value!r}")
        if cfg.dim % cfg.heads:
            raise ConfigError(f"dim ({cfg.dim}) must be divisible by heads ({cfg.heads})")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {cfg.dropout}")
        if cfg.pos_embedding not in POS_EMBEDDINGS:
            raise ConfigError(
                f"unknown pos_embedding {cfg.pos_embedding!r}; valid: {', '.join(POS_EMBEDDINGS)}"
            )
        if not cfg.lr > 0 or cfg.weight_decay < 0 or len(cfg.betas) != 2:
            raise ConfigError("lr must be > 0, weight_decay >= 0 and betas a pair")
        check_range(cfg.lr, "lr", above=0)
        check_range(cfg.weight_decay, "weight_decay", least=0)
        for b in cfg.betas:
            check_range(b, "each of betas", least=0, below=1)
        if not isinstance(cfg.conditional, bool):
            raise ConfigError(f"conditional must be true or false, got {cfg.conditional!r}")
        check_range(cfg.label_dropout, "label_dropout", least=0, below=1)
        if cfg.conditional:
            k = cfg.num_classes
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ConfigError(f"a conditional {self.name} needs num_classes >= 1 (zoo.create "
                                  f"fills it from the dataset's labels), got {k!r}")
        #: the token values and the (C, H, W) grid of the sequence (a latent model's: codes)
        self.vocab, self.token_shape = self.token_grid()
        c, h, w = self.token_shape
        self.seq_len = c * h * w
        self.tok_emb = nn.Embedding(self.vocab + 1, cfg.dim)  # the last row: the start token
        if cfg.pos_embedding == "learned":
            self.pos_emb = nn.Parameter(torch.zeros(self.seq_len, cfg.dim))
        else:
            self.row_emb = nn.Embedding(h, cfg.dim)
            self.col_emb = nn.Embedding(w, cfg.dim)
            self.chan_emb = nn.Embedding(c, cfg.dim)
            i = torch.arange(self.seq_len)
            self.register_buffer("_rows", i // (w * c), persistent=False)
            self.register_buffer("_cols", (i // c) % w, persistent=False)
            self.register_buffer("_chans", i % c, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, causal=True)
            for _ in range(cfg.depth)
        )
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, self.vocab)
        if cfg.conditional:  # registered last: an unconditional model is unchanged
            self.class_emb = nn.Embedding(cfg.num_classes + 1, cfg.dim)  # last row: null
            # adaLN: per class, a shift and scale of every LayerNorm's output (two per
            # block, then the final one), zero at the start (the identity)
            self.class_mod_emb = nn.Embedding(cfg.num_classes + 1, (4 * cfg.depth + 2) * cfg.dim)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 depth)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        if self.config.pos_embedding == "learned":
            nn.init.normal_(self.pos_emb, std=0.02)
        if self.conditional:
            nn.init.zeros_(self.class_mod_emb.weight)
        for blk in self.blocks:
            for proj in (blk.attn.proj, blk.fc2):
                proj.weight.mul_(1.0 / math.sqrt(2 * self.config.depth))

    # -- tokens --------------------------------------------------------------------------
    def token_grid(self) -> tuple[int, tuple[int, int, int]]:
        """(vocabulary, (C, H, W) of the token grid): 256 values per subpixel of the image."""
        return VOCAB, self.image_shape

    def to_tokens(self, x: Tensor) -> Tensor:
        """uint8 [N, C, H, W] -> int64 [N, D] in raster order, channels innermost."""
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1).long()

    def to_images(self, tokens: Tensor) -> Tensor:
        """int64 [N, D] -> uint8 [N, C, H, W] (inverse of ``to_tokens``)."""
        c, h, w = self.image_shape
        return tokens.view(-1, h, w, c).permute(0, 3, 1, 2).to(torch.uint8).contiguous()

    def _shifted(self, tokens: Tensor) -> Tensor:
        """The decoder input: the start token, then ``tokens`` (whose last is dropped by the
        caller when it wants predictions for exactly ``tokens``)."""
        start = torch.full((tokens.shape[0], 1), self.vocab, dtype=tokens.dtype,
                           device=tokens.device)
        return torch.cat([start, tokens], dim=1)

    def position_table(self) -> Tensor:
        """[D, dim]: the embedding of input position i, which predicts token i."""
        if self.config.pos_embedding == "learned":
            return self.pos_emb
        return self.row_emb(self._rows) + self.col_emb(self._cols) + self.chan_emb(self._chans)

    def _labels(self, labels: Tensor | None, n: int) -> Tensor | None:
        """The class of each of n rows for the network: ``labels``, the null label when
        None on a conditional model, None for an unconditional one."""
        if not self.conditional:
            return None
        if labels is None:
            return torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
        return labels

    # -- the network ---------------------------------------------------------------------
    def hidden(self, inp: Tensor, cache: Tensor | None = None, start: int = 0,
               labels: Tensor | None = None) -> Tensor:
        """Final-LN features [B, T, dim] of input tokens ``inp`` at positions start..start+T-1;
        a conditional model adds the embedding of the class ``labels`` [B] at every position."""
        t = inp.shape[1]
        x = self.tok_emb(inp)
        mods = [None] * (self.config.depth + 1)
        if labels is not None:
            x = x + self.class_emb(labels)[:, None]
            mods = self._class_mods(labels)
        x = self.drop(x + self.position_table()[start:start + t])
        for i, blk in enumerate(self.blocks):
            x = blk(x, None if cache is None else cache[i], start, mods[i])
        last = mods[-1]
        return modulate(self.ln_f(x), None if last is None else last[:, :, None], 0)

    def _class_mods(self, labels: Tensor) -> list[Tensor]:
        """The adaLN shifts and scales of classes ``labels`` [B]: [B, 4, dim] per block,
        then [B, 2, dim] of the final LayerNorm."""
        d = self.config.dim
        mod = self.class_mod_emb(labels).view(labels.shape[0], -1, d)
        return list(mod.split([4] * self.config.depth + [2], dim=1))

    def logits(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits [N, D, 256] of every subpixel of the uint8 batch ``x`` given the ones before
        (and the class ``labels`` [N] of a conditional model; None: the null label)."""
        tokens = self.to_tokens(self.check_images(x))
        return self.forward(tokens, self._labels(labels, tokens.shape[0]))

    def _step(self, tok: Tensor, pos: int, cache: Tensor, table: Tensor,
              cls: tuple | None = None) -> Tensor:
        """Logits for position pos + 1 after feeding token ``tok`` [B] at input position pos
        (``cls``: a conditional model's class embedding [B, dim] of each row and its adaLN
        shifts and scales, ``_class_mods``)."""
        x = F.embedding(tok, self.tok_emb.weight) + table[pos]
        mods = [None] * (self.config.depth + 1)
        if cls is not None:
            x = x + cls[0]
            mods = cls[1]
        for i, blk in enumerate(self.blocks):
            x = blk.step(x, cache[i], pos, mods[i])
        ln = self.ln_f
        x = modulate(F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps),
                     mods[-1], 0)
        return F.linear(x, self.head.weight, self.head.bias)

    # -- interface -----------------------------------------------------------------------
    def configure_optimizers(self):
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for n, p in params if p.dim() == 2 and "emb" not in n]
        no_decay = [p for n, p in params if not (p.dim() == 2 and "emb" not in n)]
        opt = adam(
            [{"params": decay, "weight_decay": self.config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.config.lr, betas=tuple(self.config.betas), decoupled=True,
        )
        return {"transformer": opt}

    def _warmup(self, opt: torch.optim.Optimizer) -> None:
        """Linear LR warm-up, keyed on the optimizer's own step count (so resume is exact)."""
        state = opt.state.get(opt.param_groups[0]["params"][0])
        done = int(state["step"]) if state and "step" in state else 0
        scale = min(1.0, (done + 1) / max(1, self.config.warmup_steps))
        for group in opt.param_groups:
            group["lr"] = self.config.lr * scale

    def forward(self, tokens: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits [N, D, 256] of every token of ``tokens`` [N, D] given the ones before (and
        the class ``labels`` [N] of a conditional model)."""
        return self.head(self.hidden(self._shifted(tokens[:, :-1]), labels=labels))

    def train_step(self, x, optimizers):
        batch = self.check_batch(x)
        tokens = self.to_tokens(batch.images)
        labels = None
        if self.conditional:
            labels = self.drop_labels(batch.labels, self.config.label_dropout)
        logits = self.wrapped("model")(tokens, labels)
        loss = F.cross_entropy(logits.float().reshape(-1, self.vocab), tokens.reshape(-1))
        opt = optimizers["transformer"]
        self._warmup(opt)
        self.optimize(loss, opt)
        return {"loss_bpd": loss.item() / LN2}

    def describe_nll(self, labels=None, **options) -> str:
        if not self.conditional:
            return "exact"
        return ("exact, conditional on the labels" if labels is not None
                else "exact, unconditional (the null label)")

    def nll_inputs(self, x, labels, batch_size, opts: dict) -> tuple[Tensor, Tensor | None, int]:
        """``nll``'s arguments checked: the images on the device, each row's class (None for
        an unconditional model; the null label where none is given) and the batch size."""
        if opts:
            raise ConfigError(f"unknown nll option(s) {', '.join(opts)} for {self.name}; "
                              "valid: labels, batch_size")
        batch_size = option_number(batch_size, "batch_size", int)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        x = self.check_images(x)
        return x, self._labels(self.check_labels(labels, x.shape[0]), x.shape[0]), batch_size

    @torch.no_grad()
    def nll(self, x, labels: Tensor | None = None, batch_size: int = 256, **opts) -> Tensor:
        """Exact NLL in bits/dim, one value per image: the summed token cross-entropy / (D ln 2).
        A conditional model's is -log2 p(x | labels) with ``labels`` (an int or one per
        image), and under the null label (the unconditional model it learned) without."""
        x, labels, batch_size = self.nll_inputs(x, labels, batch_size, opts)
        out = []
        with eval_mode(self):
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size]
                logits = self.logits(xb, None if labels is None else labels[i:i + batch_size])
                logits = logits.float()
                ce = F.cross_entropy(logits.transpose(1, 2), self.to_tokens(xb),
                                     reduction="none")
                out.append(ce.sum(1) / (self.seq_len * LN2))
        return torch.cat(out) if out else torch.empty(0, device=self.device)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        prefix: Tensor | None = None,
        use_cache: bool = True,
        batch_size: int = 64,
        cuda_graph="auto",
        **options,
    ) -> Tensor:
        """n uint8 images decoded token by token.

        Sampler options (``Tokens``): ``temperature`` scales the logits (0 = greedy),
        ``top_k`` keeps the k likeliest values per subpixel. ``prefix`` (uint8
        [n, C, r, W]) fixes the first r rows and the model fills in the rest,
        ``use_cache=False`` recomputes the prefix every step. A conditional model draws
        class ``labels`` (an int or one per image; None: the null label, i.e.
        unconditionally), with ``guidance`` w > 1 pushing the logits away from the
        unconditional ones (``Tokens``). ``cuda_graph`` replays the
        whole cached decoding (no prefix) as one captured CUDA graph, with the same samples
        for the same generator; ``"auto"`` (default) does so on CUDA from the second batch
        of the same size and options on.
        """
        opts = self.parse_sampler(options, also=("prefix", "use_cache", "batch_size",
                                                 "cuda_graph"))
        temperature, top_k, w = opts.temperature, opts.top_k, opts.guidance
        n = option_number(n, "n", int)
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        labels = self.check_labels(labels, n)
        if labels is None or w == 0.0:
            labels, w = None, 1.0  # the null label: guidance leaves it as it is
        labels = self._labels(labels, n)
        use_cache = option_flag(use_cache, "use_cache")
        batch_size = option_number(batch_size, "batch_size", int)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        prefix_tokens = self._check_prefix(prefix, n)
        graph = graph_mode(cuda_graph, self.device)

        with eval_mode(self):
            out = [
                self._generate(
                    min(batch_size, n - i),
                    None if prefix_tokens is None else prefix_tokens[i:i + batch_size],
                    temperature, top_k, use_cache, generator, graph,
                    None if labels is None else labels[i:i + batch_size], w,
                )
                for i in range(0, n, batch_size)
            ]
        c, h, w = self.image_shape
        if not out:
            return torch.empty(0, c, h, w, dtype=torch.uint8, device=self.device)
        return torch.cat(out)

    def _check_prefix(self, prefix, n: int) -> Tensor | None:
        if prefix is None:
            return None
        c, h, w = self.image_shape
        expected = (f"prefix must be a uint8 tensor [n, C, r, W] = [{n}, {c}, r, {w}] holding "
                    f"the first r rows (0 <= r <= {h}) of each image")
        if not isinstance(prefix, Tensor):
            raise ConfigError(f"{expected}, got {type(prefix).__name__}")
        if prefix.dtype != torch.uint8:
            raise ConfigError(f"{expected}, got dtype {prefix.dtype}")
        if prefix.dim() != 4 or prefix.shape[0] != n or prefix.shape[1] != c \
                or prefix.shape[3] != w or prefix.shape[2] > h:
            raise ConfigError(f"{expected}, got shape {tuple(prefix.shape)}")
        return self.to_tokens(prefix.to(self.device))

    def _row_classes(self, labels: Tensor | None, w: float) -> Tensor | None:
        """The class of each row the network decodes: ``labels`` [b], or with guidance
        (w != 1) the labels and then as many null labels [2b]."""
        if labels is None or w == 1.0:
            return labels
        return torch.cat([labels, torch.full_like(labels, self.num_classes)])

    @staticmethod
    def _guide(logits: Tensor, w: float) -> Tensor:
        """[b, 256] logits to draw from: the rows as they are (w = 1), or of [2b] rows
        (conditional, then null) l_null + w (l_cond - l_null)."""
        if w == 1.0:
            return logits
        cond, null = logits.float().chunk(2)
        return null + w * (cond - null)

    def _generate(self, b: int, prefix: Tensor | None, temperature: float, top_k: int | None,
                  use_cache: bool, generator, graph: tuple[bool, bool],
                  labels: Tensor | None = None, w: float = 1.0) -> Tensor:
        dev = self.device
        length = self.seq_len
        pick = _TokenPicker(b, temperature, top_k, generator, dev, self.vocab)
        rows = self._row_classes(labels, w)
        wanted, auto = graph
        if (wanted and use_cache and prefix is None
                and model_graphs(self).worth_it((b, temperature, top_k, w), auto)
                and (pick.greedy or length * b * self.vocab * 4 <= NOISE_BYTES)):
            return self._generate_graphed(b, pick, rows, w)
        tokens = torch.empty(b, length, dtype=torch.long, device=dev)
        p = 0 if prefix is None else prefix.shape[1]
        if p:
            tokens[:, :p] = prefix
        if use_cache:
            self._decode(tokens, p, length, self._new_cache(b if rows is None else len(rows)),
                         lambda t, logits: pick(logits), rows, w)
        else:
            reps = 1 if w == 1.0 else 2
            for t in progress.steps(range(p, length), b):  # each token counted by a progress bar
                inp = self._shifted(tokens[:, :t]).repeat(reps, 1)
                logits = self.head(self.hidden(inp, labels=rows)[:, -1])
                tokens[:, t] = pick(self._guide(logits, w))
        return self.to_images(tokens)

    def _new_cache(self, b: int) -> Tensor:
        cfg = self.config
        return new_kv_cache(cfg.depth, b, cfg.heads, self.seq_len, cfg.dim // cfg.heads,
                            device=self.device, dtype=self.head.weight.dtype)

    def _decode(self, tokens: Tensor, p: int, end: int, cache: Tensor, pick,
                rows: Tensor | None = None, w: float = 1.0) -> None:
        """Fill ``tokens[:, p:end]`` with the KV-cached decoder, given the first p tokens;
        ``pick(t, logits)`` chooses token t. ``rows`` are the classes of the decoded rows
        (``_row_classes``: with guidance twice as many as ``tokens``', conditional then null, one
        cache for both halves). No step synchronises with the host."""
        if p == end:
            return
        reps = 1 if w == 1.0 else 2
        table = self.position_table()
        cls = None if rows is None else (self.class_emb(rows), self._class_mods(rows))
        inp = self._shifted(tokens[:, :p]).repeat(reps, 1)
        logits = self.head(self.hidden(inp, cache, labels=rows)[:, -1])
        for t in progress.steps(range(p, end), tokens.shape[0]):  # counted by a bar, if any
            tok = pick(t, self._guide(logits, w))
            tokens[:, t] = tok
            if t + 1 < end:
                logits = self._step(tok.repeat(reps), t + 1, cache, table, cls)

    def _generate_graphed(self, b: int, pick: _TokenPicker, rows: Tensor | None = None,
                          w: float = 1.0) -> Tensor:
        """``_decode`` of a whole image replayed as one CUDA graph (``zoo.nn.graphs``). The
        Gumbel noise of every step is drawn before the replay, in ``_decode``'s order; a
        conditional model's classes are copied into the graph's label buffer."""
        dev, length = self.device, self.seq_len

        def build():
            tokens = torch.zeros(b, length, dtype=torch.long, device=dev)
            classes = None if rows is None else torch.zeros_like(rows)
            cache = self._new_cache(b if rows is None else len(rows))
            noise = None if pick.greedy else torch.ones(length, b, self.vocab, device=dev)

            def run(end):
                self._decode(tokens, 0, end, cache,
                             lambda t, logits: pick.choose(logits, None if noise is None
                                                           else noise[t]), classes, w)
                return tokens

            graph, _ = capture(lambda: run(length), lambda: run(2), dev)
            # the entry holds every tensor the graph reads or writes: a graph holds no
            # reference to them, and freed memory would be reused under its replay
            return graph, tokens, noise, cache, classes

        graph, tokens, noise, _, classes = model_graphs(self).get(
            ("decode", b, pick.greedy, pick.inv_t, pick.top_k, rows is not None, w),
            weights_key(self), build)
        if classes is not None:
            classes.copy_(rows, non_blocking=True)
        if noise is not None:
            same = pick.noise.device == dev
            for t in range(length):
                if same:
                    noise[t].exponential_(generator=pick.generator)
                else:
                    noise[t].copy_(pick.noise.exponential_(generator=pick.generator))
        graph.replay()
        progress.ran(length, b)
        return self.to_images(tokens)

MODELS = {
    "ar-transformer": ModelSpec(
        ARTransformer,
        "decoder-only Transformer over subpixels in raster order, exact NLL (256-way softmax)",
    ),
    "ar-transformer-full": ModelSpec(
        ARTransformer,
        "the same Transformer at GPU size (dim 512, depth 8, heads 8; 25.9M parameters at 28x28)",
        defaults={"dim": 512, "depth": 8, "heads": 8, "lr": 6e-4, "warmup_steps": 200},
    ),
}
