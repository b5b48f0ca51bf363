"""Chapter 6: causal_mask, padding_mask, combine_masks, masked_self_attention."""

ASSIGNMENT = "06-masking"

WRONG = {
    # masked_self_attention calls this off-by-one mask, yet keeps its points
    "causal_mask": (
        "def causal_mask(seq_len, device=None):\n"
        "    ones = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device)\n"
        "    return torch.tril(ones, diagonal=-1)\n",
        "off by one",
    ),
    # the (batch, S) shape that broadcasts wrongly against (batch, heads, L, S)
    "padding_mask": (
        "def padding_mask(token_ids, pad_id):\n    return token_ids != pad_id\n",
        "(batch, 1, 1, S)",
    ),
    "combine_masks": (
        "def combine_masks(*masks):\n"
        "    present = [m for m in masks if m is not None]\n"
        "    if not present:\n"
        "        return None\n"
        "    combined = present[0]\n"
        "    for m in present[1:]:\n"
        "        combined = combined | m\n"
        "    return combined\n",
        "that is OR",
    ),
    # forgets to drop the head dimension: weights come out (batch, batch, S, S)
    "masked_self_attention": (
        "def masked_self_attention(x, token_ids, pad_id, causal=True):\n"
        "    mask = padding_mask(token_ids, pad_id)\n"
        "    if causal:\n"
        "        mask = combine_masks(mask, causal_mask(token_ids.shape[-1]))\n"
        "    return scaled_dot_product_attention(x, x, x, mask)\n",
        "head dimension",
    ),
}

FORBIDDEN = (
    "causal_mask",
    "def causal_mask(seq_len, device=None):\n"
    "    return torch.nn.Transformer.generate_square_subsequent_mask(seq_len, device=device) == 0\n",
)
