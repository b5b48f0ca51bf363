"""The full encoder-decoder Transformer (chapter 7), built from one config.

Data flow (Vaswani et al. 2017, Figure 1):

1. source ids -> token embedding * √d_model + positions -> encoder stack -> memory;
2. target ids -> token embedding * √d_model + positions -> decoder stack, which attends to
   itself causally and to the memory;
3. generator: a linear map to the target vocabulary and log_softmax.

Shapes: ids ``(batch, seq)``, activations ``(batch, seq, d_model)``, log-probabilities
``(batch, T, tgt_vocab)``. Masks are bool, True = may attend.

:meth:`EncoderDecoder.forward` runs these steps through the model's methods;
:func:`transformer_forward` spells the same steps out from the model's parts, the way chapter
7's exercise asks for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from transformer_course.embeddings import TokenEmbedding
from transformer_course.layers import DecoderLayer, EncoderLayer
from transformer_course.masks import causal_mask, combine_masks, padding_mask
from transformer_course.positional import SinusoidalPositionalEncoding


@dataclass
class TransformerConfig:
    """Everything that defines the model's shape; the defaults train on a CPU in minutes."""

    src_vocab: int  # number of source token ids (no sensible default: depends on the data)
    tgt_vocab: int  # number of target token ids
    d_model: int = 128  # width of every token vector (the paper's base model: 512)
    n_heads: int = 4  # attention heads, d_head = d_model / n_heads = 32 (paper: 8 of 64)
    n_layers: int = 2  # layers in each of encoder and decoder (paper: 6)
    d_ff: int = 512  # feed-forward hidden width, 4 * d_model as in the paper
    dropout: float = 0.1  # the paper's P_drop, on sublayer outputs, attention and embeddings
    max_len: int = 256  # longest sequence the positional table covers
    norm_first: bool = False  # False: post-LN as in the paper; True: pre-LN, stabler to train
    activation: str = "relu"  # feed-forward non-linearity, "relu" (paper) or "gelu"
    layer_norm_eps: float = 1e-5  # torch's default, so layers compare equal to torch's
    pad_id: int = 0  # the id that pads short sequences; masked out as a key everywhere


def _layer_kwargs(config: TransformerConfig) -> dict:
    return dict(
        d_model=config.d_model,
        n_heads=config.n_heads,
        d_ff=config.d_ff,
        dropout=config.dropout,
        activation=config.activation,
        norm_first=config.norm_first,
        layer_norm_eps=config.layer_norm_eps,
    )


def _final_norm(config: TransformerConfig) -> nn.Module:
    # Pre-LN layers add each sublayer's output to an un-normalised residual stream, so the
    # stack's output has no LayerNorm yet and needs one; a post-LN stack ends with one.
    if config.norm_first:
        return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
    return nn.Identity()


class Encoder(nn.Module):
    """A stack of ``n_layers`` encoder layers (plus a final LayerNorm when pre-LN)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        kwargs = _layer_kwargs(config)
        self.layers = nn.ModuleList(EncoderLayer(**kwargs) for _ in range(config.n_layers))
        self.norm = _final_norm(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(batch, S, d_model)``, ``mask`` broadcastable to ``(batch, heads, S, S)``
        -> ``(batch, S, d_model)``."""
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class Decoder(nn.Module):
    """A stack of ``n_layers`` decoder layers (plus a final LayerNorm when pre-LN)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        kwargs = _layer_kwargs(config)
        self.layers = nn.ModuleList(DecoderLayer(**kwargs) for _ in range(config.n_layers))
        self.norm = _final_norm(config)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` ``(batch, T, d_model)``, ``memory`` ``(batch, S, d_model)``; masks broadcastable
        to ``(batch, heads, T, T)`` and ``(batch, heads, T, S)`` -> ``(batch, T, d_model)``."""
        for layer in self.layers:  # every layer attends to the same, final encoder output
            x = layer(x, memory, self_mask, memory_mask)
        return self.norm(x)


class Generator(nn.Module):
    """From decoder vectors to log-probabilities over the target vocabulary."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d_model)`` -> ``(..., vocab_size)`` log-probabilities."""
        # log_softmax, not log(softmax): it never takes the log of an underflowed 0, and
        # pairs with nn.NLLLoss for training.
        return torch.log_softmax(self.proj(x), dim=-1)


class EncoderDecoder(nn.Module):
    """The Transformer of Vaswani et al. (2017): embeddings, encoder, decoder, generator."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.pad_id = config.pad_id
        self.src_embed = TokenEmbedding(config.src_vocab, config.d_model, padding_idx=config.pad_id)
        self.tgt_embed = TokenEmbedding(config.tgt_vocab, config.d_model, padding_idx=config.pad_id)
        # One table serves source and target: it holds no parameters, only the dropout.
        self.positions = SinusoidalPositionalEncoding(config.max_len, config.d_model, config.dropout)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.generator = Generator(config.d_model, config.tgt_vocab)

    def make_src_mask(self, src: torch.Tensor) -> torch.Tensor:
        """``src`` ``(batch, S)`` -> bool ``(batch, 1, 1, S)``: no one attends to padding."""
        return padding_mask(src, self.pad_id)

    def make_tgt_mask(self, tgt: torch.Tensor) -> torch.Tensor:
        """``tgt`` ``(batch, T)`` -> bool ``(batch, 1, T, T)``: no padding and no future."""
        future = causal_mask(tgt.shape[1], device=tgt.device)  # (T, T)
        return combine_masks(padding_mask(tgt, self.pad_id), future)  # (batch, 1, T, T)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``src`` ids ``(batch, S)`` -> memory ``(batch, S, d_model)``."""
        return self.encoder(self.positions(self.src_embed(src)), src_mask)

    def decode(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``tgt`` ids ``(batch, T)`` and memory ``(batch, S, d_model)`` -> decoder output
        ``(batch, T, d_model)`` (apply :attr:`generator` for log-probabilities)."""
        return self.decoder(self.positions(self.tgt_embed(tgt)), memory, tgt_mask, memory_mask)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pass: predict every next target token at once.

        Args:
            src: ``(batch, S)`` source ids, padded with ``pad_id``.
            tgt: ``(batch, T)`` target ids fed to the decoder (start token, then the
                reference output shifted right), padded with ``pad_id``.

        Returns:
            ``(batch, T, tgt_vocab)`` log-probabilities; position t predicts token t + 1.
        """
        src_mask = self.make_src_mask(src)  # (batch, 1, 1, S)
        memory = self.encode(src, src_mask)  # (batch, S, d_model)
        hidden = self.decode(tgt, memory, self.make_tgt_mask(tgt), src_mask)  # (batch, T, d_model)
        return self.generator(hidden)  # (batch, T, tgt_vocab)


def transformer_forward(model: EncoderDecoder, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The teacher-forced forward pass of ``model``, written out from its parts.

    Equal to ``model(src, tgt)``; every step of the paper's Figure 1 is one line here, using
    only the model's weights (embedding tables, position table, linear map) and its layers.

    Args:
        model: an :class:`EncoderDecoder`.
        src: ``(batch, S)`` source ids, padded with ``model.pad_id``.
        tgt: ``(batch, T)`` target ids fed to the decoder (start token first), padded with
            ``model.pad_id``.

    Returns:
        ``(batch, T, tgt_vocab)`` log-probabilities; position t predicts target token t + 1.
    """
    d_model = model.config.d_model
    table = model.positions.pe  # (max_len, d_model), the sinusoidal position vectors
    S, T = src.shape[1], tgt.shape[1]

    # 1. Masks (True = may attend): nobody looks at padding; the decoder also not ahead.
    src_mask = (src != model.pad_id)[:, None, None, :]  # (batch, 1, 1, S)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool, device=tgt.device))  # (T, T)
    tgt_mask = (tgt != model.pad_id)[:, None, None, :] & causal  # (batch, 1, T, T)

    # 2. Encoder: embed, scale by sqrt(d_model), add positions, run every layer.
    x = model.src_embed.embedding(src) * math.sqrt(d_model) + table[:S]  # (batch, S, d_model)
    x = model.positions.dropout(x)
    for layer in model.encoder.layers:
        x = layer(x, src_mask)  # (batch, S, d_model)
    memory = model.encoder.norm(x)  # a LayerNorm for pre-LN stacks, else nothing

    # 3. Decoder: the same for the target; every layer attends to the same memory.
    y = model.tgt_embed.embedding(tgt) * math.sqrt(d_model) + table[:T]  # (batch, T, d_model)
    y = model.positions.dropout(y)
    for layer in model.decoder.layers:
        y = layer(y, memory, tgt_mask, src_mask)  # (batch, T, d_model)
    y = model.decoder.norm(y)

    # 4. Generator: a score per vocabulary entry, turned into log-probabilities.
    return torch.log_softmax(model.generator.proj(y), dim=-1)  # (batch, T, tgt_vocab)


def make_model(config: TransformerConfig) -> EncoderDecoder:
    """Build an :class:`EncoderDecoder` with Xavier-uniform weight matrices.

    Xavier (Glorot & Bengio 2010) draws each matrix with variance 2 / (fan_in + fan_out), so
    activations and gradients keep roughly the same size through the many stacked linear
    maps. Biases and LayerNorm parameters (1-D) keep torch's defaults; the padding rows of the
    embeddings are set back to zero.
    """
    model = EncoderDecoder(config)
    for parameter in model.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)
    with torch.no_grad():
        model.src_embed.embedding.weight[config.pad_id].zero_()
        model.tgt_embed.embedding.weight[config.pad_id].zero_()
    return model
