"""Library calls that would do an exercise for the student, shared by the chapters' exercises.

Each is a :class:`~.base.Forbidden`: recognised statically (the attribute name in the answer's
source) and at run time (the C function or Python function actually entered). An exercise lists
the ones that implement what it asks for; calling one earns 0 for that exercise, with a message.
"""

from __future__ import annotations

from .base import Forbidden

SOFTMAX_CALLS = Forbidden(
    label="torch.softmax / Tensor.softmax / F.softmax (a library softmax)",
    builtin_names=frozenset({"softmax", "_softmax", "special_softmax", "log_softmax", "_log_softmax"}),
    python_functions=frozenset(
        {("torch/nn/functional.py", "softmax"), ("torch/nn/functional.py", "log_softmax")}
    ),
    torch_name_parts=frozenset({"softmax", "softmin"}),
)
SDPA_CALLS = Forbidden(
    label="torch.nn.functional.scaled_dot_product_attention",
    builtin_names=frozenset(
        {
            "scaled_dot_product_attention",
            "_scaled_dot_product_attention_math",
            "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_efficient_attention",
            "_scaled_dot_product_flash_attention_for_cpu",
            "_fused_sdp_choice",
        }
    ),
    torch_name_parts=frozenset({"scaled_dot_product"}),
)
MHA_CALLS = Forbidden(
    label="torch.nn.MultiheadAttention",
    builtin_names=frozenset({"_native_multi_head_attention"}),
    python_functions=frozenset(
        {("torch/nn/functional.py", "multi_head_attention_forward"),
         ("torch/nn/modules/activation.py", "MultiheadAttention")}
    ),
    torch_name_parts=frozenset({"multi_head_attention"}),
)
TRANSFORMER_CALLS = Forbidden(
    label="torch.nn.Transformer / TransformerEncoderLayer / TransformerDecoderLayer (and their stacks)",
    builtin_names=frozenset({"_transformer_encoder_layer_fwd"}),
    python_functions=frozenset({("torch/nn/modules/transformer.py", "*")}),
    source_names=frozenset(
        {"Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
         "TransformerDecoderLayer"}
    ),
)
