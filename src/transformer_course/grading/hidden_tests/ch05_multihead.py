"""Chapter 5, grader side: references, hidden inputs and typical mistakes.

Hidden checks copy the weights of a seeded ``torch.nn.MultiheadAttention(batch_first=True)`` into
the student's module, in the layout of the reference's ``MultiHeadAttention.from_torch``, and
compare outputs and per-head weights with the reference. The typical mistakes, above all the
reshape to heads without the transpose, are written as code so that a message can name the one a
student made; the multi-head ones are a whole attention module with a knob per mistake, right
with every knob at its default. That is why this module lives on the grader's side: it is never
imported by the student side or inside the grading sandbox. The visible checks name the same
mistakes from their recorded outputs (``exercises/recorded/05-multihead.json``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...exercises.base import Case
from ...exercises.inputs import randn, with_float32
from ...multihead import MultiHeadAttention
from ..hidden_spec import HiddenTests, Mistake

NO_TRANSPOSE_SPLIT = (
    "you reshaped to heads without the transpose: x.view(batch, heads, seq, d_head) has the "
    "right shape, but it cuts the memory in the wrong order, so each 'head' gets a jumble of "
    "positions instead of its own d_head columns of every position. Split the last dimension "
    "first, x.view(batch, seq, heads, d_head), then swap seq and heads with .transpose(1, 2)."
)
INTERLEAVED_SPLIT = (
    "each head must get a block of d_head neighbouring columns (head 0: columns 0 to "
    "d_head - 1), not every n_heads-th column: view as (batch, seq, heads, d_head), not "
    "(batch, seq, d_head, heads)."
)
NO_TRANSPOSE_MERGE = (
    "you merged the heads without the transpose: x.reshape(batch, seq, heads * d_head) on a "
    "(batch, heads, seq, d_head) tensor has the right shape, but puts positions of one head "
    "side by side instead of the heads of one position. Swap heads and seq back first, "
    "x.transpose(1, 2), then .reshape(batch, seq, heads * d_head)."
)
INTERLEAVED_MERGE = (
    "the heads must sit side by side as blocks (head 0 in columns 0 to d_head - 1, head 1 "
    "next, ...), not interleaved column by column: transpose to (batch, seq, heads, d_head), "
    "then reshape."
)


# --------------------------------------------------------------------------- split_heads


def split_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        Case("x (2, 5, 12), 3 heads", (randn(gen, 2, 5, 12), 3)),
        Case("x (3, 7, 16), 4 heads", (randn(gen, 3, 7, 16), 4)),
        Case("one position, x (2, 1, 8), 2 heads", (randn(gen, 2, 1, 8), 2)),
        Case("one head, x (2, 4, 6)", (randn(gen, 2, 4, 6), 1)),
        Case("d_head = 1, x (2, 3, 6), 6 heads", (randn(gen, 2, 3, 6), 6)),
        Case("as many positions as heads, x (1, 4, 8), 4 heads", (randn(gen, 1, 4, 8), 4)),
        Case("a larger model, x (2, 9, 64), 8 heads", (randn(gen, 2, 9, 64), 8)),
    ]
    return with_float32(cases, {"x (2, 5, 12), 3 heads", "x (3, 7, 16), 4 heads"})


def _split_without_transpose(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    batch, seq, d_model = x.shape
    return x.reshape(batch, n_heads, seq, d_model // n_heads)


def _split_interleaved(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    batch, seq, d_model = x.shape
    return x.reshape(batch, seq, d_model // n_heads, n_heads).permute(0, 3, 1, 2)


SPLIT_HEADS_HIDDEN = HiddenTests(
    function="split_heads",
    reference="transformer_course.multihead:split_heads",
    make_cases=split_cases,
    mistakes=(
        Mistake(_split_without_transpose, NO_TRANSPOSE_SPLIT),
        Mistake(_split_interleaved, INTERLEAVED_SPLIT),
    ),
)


# --------------------------------------------------------------------------- merge_heads


def merge_cases(gen: torch.Generator) -> list[Case]:
    cases = [
        Case("heads (2, 3, 5, 4)", (randn(gen, 2, 3, 5, 4),)),
        Case("heads (3, 4, 7, 4)", (randn(gen, 3, 4, 7, 4),)),
        Case("one position, heads (2, 2, 1, 4)", (randn(gen, 2, 2, 1, 4),)),
        Case("one head, heads (2, 1, 4, 6)", (randn(gen, 2, 1, 4, 6),)),
        Case("d_head = 1, heads (2, 6, 3, 1)", (randn(gen, 2, 6, 3, 1),)),
        Case("as many positions as heads, heads (1, 4, 4, 2)", (randn(gen, 1, 4, 4, 2),)),
        Case("a larger model, heads (2, 8, 9, 8)", (randn(gen, 2, 8, 9, 8),)),
    ]
    return with_float32(cases, {"heads (2, 3, 5, 4)", "heads (3, 4, 7, 4)"})


def _merge_without_transpose(x: torch.Tensor) -> torch.Tensor:
    batch, heads, seq, d_head = x.shape
    return x.reshape(batch, seq, heads * d_head)


def _merge_interleaved(x: torch.Tensor) -> torch.Tensor:
    batch, heads, seq, d_head = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, seq, heads * d_head)


MERGE_HEADS_HIDDEN = HiddenTests(
    function="merge_heads",
    reference="transformer_course.multihead:merge_heads",
    make_cases=merge_cases,
    mistakes=(
        Mistake(_merge_without_transpose, NO_TRANSPOSE_MERGE),
        Mistake(_merge_interleaved, INTERLEAVED_MERGE),
    ),
)


# --------------------------------------------------------------------------- MultiHeadAttention


def _torch_weights(gen: torch.Generator, d_model: int, n_heads: int,
                   **kwargs) -> dict[str, torch.Tensor]:
    """The weights of a seeded ``nn.MultiheadAttention(batch_first=True)``, in the reference's
    layout (``MultiHeadAttention.from_torch``), in float64.

    torch initialises its biases to zero; random ones make them count. The global random state
    is left as it was (the student's notebook shares it).
    """
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        theirs = nn.MultiheadAttention(d_model, n_heads, batch_first=True, dtype=torch.float64,
                                       **kwargs)
        with torch.no_grad():
            if theirs.in_proj_bias is not None:
                theirs.in_proj_bias.normal_(std=0.5)
                theirs.out_proj.bias.normal_(std=0.5)
        ours = MultiHeadAttention.from_torch(theirs).double()  # (its own init draws too)
    return {name: tensor.detach().clone() for name, tensor in ours.state_dict().items()}


def mha_cases(gen: torch.Generator) -> list[Case]:
    def case(label: str, batch: int, L: int, S: int, d_model: int, n_heads: int,
             mask: torch.Tensor | None = None, self_attention: bool = False,
             **kwargs) -> Case:
        query = randn(gen, batch, L, d_model)
        if self_attention:
            key = value = query
        else:
            key = randn(gen, batch, S, kwargs.get("kdim") or d_model)
            value = randn(gen, batch, S, kwargs.get("vdim") or d_model)
        return Case(label, (query, key, value), {} if mask is None else {"mask": mask},
                    init=(d_model, n_heads), init_kwargs=kwargs,
                    state=_torch_weights(gen, d_model, n_heads, **kwargs))

    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    padding = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    padding[0, ..., 4:] = False  # sequence 0 has 4 real tokens
    padding[2] = False  # sequence 2 is all padding: its queries may attend to nothing
    both = torch.tril(torch.ones(5, 5, dtype=torch.bool)) & torch.tensor(
        [[True] * 5, [True, True, True, False, False]])[:, None, None, :]  # (2, 1, 5, 5)
    per_head = torch.rand(2, 4, 3, 5, generator=gen) > 0.4
    per_head[..., 0] = True
    per_head[1, 2, 1] = False  # head 2 of example 1: query 1 may attend to nothing
    cases = [
        case("self-attention, x (2, 5, 16), 4 heads", 2, 5, 5, 16, 4, self_attention=True),
        case("cross-attention, query (3, 4, 12), key/value (3, 7, 12), 3 heads", 3, 4, 7, 12, 3),
        case("query, key and value all different, length 5, d_model 8, 2 heads", 2, 5, 5, 8, 2),
        case("one head, x (2, 5, 8)", 2, 5, 5, 8, 1, self_attention=True),
        case("d_head = 1: 6 heads, d_model 6", 2, 4, 4, 6, 6, self_attention=True),
        case("a single query (L = 1) over 6 keys, 2 heads", 2, 1, 6, 8, 2),
        case("a single key (S = 1), 2 heads", 2, 4, 1, 8, 2),
        case("a causal (6, 6) mask, 2 heads", 2, 6, 6, 8, 2, mask=causal, self_attention=True),
        case("a padding mask (3, 1, 1, 6) with a fully padded sequence, 2 heads", 3, 6, 6, 8, 2,
             mask=padding, self_attention=True),
        case("causal and padding masks combined, (2, 1, 5, 5), 4 heads", 2, 5, 5, 8, 4,
             mask=both, self_attention=True),
        case("a per-head mask (2, 4, 3, 5) with a query that may attend to nothing", 2, 3, 5,
             8, 4, mask=per_head),
        case("key and value of other widths (kdim 5, vdim 7), 3 heads", 2, 4, 6, 12, 3,
             kdim=5, vdim=7),
        case("no biases (bias=False), 2 heads", 2, 4, 4, 8, 2, bias=False),
    ]
    return with_float32(cases, {"self-attention, x (2, 5, 16), 4 heads",
                                "cross-attention, query (3, 4, 12), key/value (3, 7, 12), 3 heads",
                                "a causal (6, 6) mask, 2 heads",
                                "a padding mask (3, 1, 1, 6) with a fully padded sequence, 2 heads"})


# The mistakes are whole modules (the machinery builds them like the student's class, with the
# reference's parameter names and weights). They compute attention themselves, on purpose
# without the reference or a forbidden library call, so each fails for its own reason.


class _Sketch(nn.Module):
    """Multi-head attention with knobs that reproduce typical mistakes (right with the defaults)."""

    split_transpose = True  # False: view(batch, heads, seq, d_head) straight away
    merge_transpose = True  # False: reshape(batch, seq, d_model) without transposing back
    apply_out_proj = True
    scale_width = "d_head"  # "d_model": divide the scores by sqrt(d_model)
    invert_mask = False
    keys_from_query = False  # k_proj(query), v_proj(query): self-attention only
    swap_key_value = False  # k_proj(value), v_proj(key)
    ignore_kdim = False  # k_proj and v_proj take d_model features, whatever kdim and vdim say

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        if self.ignore_kdim:
            kdim = vdim = None
        self.k_proj = nn.Linear(kdim or d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(vdim or d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = x.shape
        d_head = d_model // self.n_heads
        if not self.split_transpose:
            return x.reshape(batch, self.n_heads, seq, d_head)
        return x.reshape(batch, seq, self.n_heads, d_head).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        batch, heads, seq, d_head = x.shape
        if not self.merge_transpose:
            return x.reshape(batch, seq, heads * d_head)
        return x.transpose(1, 2).reshape(batch, seq, heads * d_head)

    def forward(self, query, key, value, mask=None):
        if self.keys_from_query:
            key = value = query
        if self.swap_key_value:
            key, value = value, key
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key))
        v = self._split(self.v_proj(value))
        width = q.shape[-1] * (self.n_heads if self.scale_width == "d_model" else 1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(width)
        if mask is not None:
            blocked = mask if self.invert_mask else ~mask
            scores = scores.masked_fill(blocked, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if mask is not None:
            weights = weights.masked_fill(blocked, 0.0)
        output = self._merge(weights @ v)
        if self.apply_out_proj:
            output = self.out_proj(output)
        return output, weights


class _NoTransposeSplit(_Sketch):
    split_transpose = False


class _NoTransposeMerge(_Sketch):
    merge_transpose = False


class _NoOutProj(_Sketch):
    apply_out_proj = False


class _ScaledByModelWidth(_Sketch):
    scale_width = "d_model"


class _InvertedMask(_Sketch):
    invert_mask = True


class _KeysFromQuery(_Sketch):
    keys_from_query = True


class _SwappedKeyValue(_Sketch):
    swap_key_value = True


class _IgnoresKdim(_Sketch):
    ignore_kdim = True


MHA_MISTAKES = (
    Mistake(_NoTransposeSplit, NO_TRANSPOSE_SPLIT.replace(
        "Split the last", "(Or call your split_heads.) Split the last")),
    Mistake(_NoTransposeMerge, NO_TRANSPOSE_MERGE.replace(
        "Swap heads", "(Or call your merge_heads.) Swap heads")),
    Mistake(_NoOutProj, "you left out the output projection: return "
                        "self.out_proj(merge_heads(...)), it mixes the heads' results."),
    Mistake(_ScaledByModelWidth, "you divided the scores by sqrt(d_model); each head's scores are "
                                 "divided by sqrt(d_head), the width of its own queries and keys "
                                 "(chapter 4's scaled_dot_product_attention does that for you)."),
    Mistake(_InvertedMask, "your mask is the wrong way round: True means 'may attend' here, the "
                           "opposite of nn.MultiheadAttention. Pass the mask on unchanged."),
    Mistake(_KeysFromQuery, "you made keys and values from the query: use self.k_proj(key) and "
                            "self.v_proj(value) (they differ in cross-attention)."),
    Mistake(_SwappedKeyValue, "keys and values are swapped: self.k_proj(key) makes the keys, "
                              "self.v_proj(value) the values."),
    Mistake(_IgnoresKdim, "you ignore kdim and vdim: in cross-attention the keys and values may have "
                          "widths of their own, so k_proj takes kdim features and v_proj vdim ones "
                          "(d_model when they are None): nn.Linear(kdim or d_model, d_model) and "
                          "nn.Linear(vdim or d_model, d_model)."),
)

MULTI_HEAD_ATTENTION_HIDDEN = HiddenTests(
    function="MultiHeadAttention",
    reference="transformer_course.multihead:MultiHeadAttention",
    make_cases=mha_cases,
    mistakes=MHA_MISTAKES,
)


HIDDEN_TESTS = (SPLIT_HEADS_HIDDEN, MERGE_HEADS_HIDDEN, MULTI_HEAD_ATTENTION_HIDDEN)
