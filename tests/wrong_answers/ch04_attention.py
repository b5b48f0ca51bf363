"""Chapter 4: softmax, attention_scores, scaled_dot_product_attention."""

ASSIGNMENT = "04-attention"

WRONG = {
    "softmax": (
        "def softmax(x, dim=-1):\n    return x.exp() / x.exp().sum(dim=dim, keepdim=True)\n",
        "Subtract the maximum",
    ),
    # scaled_dot_product_attention calls these unscaled scores, yet keeps its points
    "attention_scores": (
        "def attention_scores(q, k):\n    return q @ k.transpose(-2, -1)\n",
        "divide by sqrt(d_k)",
    ),
    "scaled_dot_product_attention": (
        "def scaled_dot_product_attention(q, k, v, mask=None):\n"
        "    w = softmax(attention_scores(q, k))\n"
        "    return w @ v, w\n",
        "causally masked",
    ),
}

FORBIDDEN = ("softmax", "def softmax(x, dim=-1):\n    return torch.softmax(x, dim=dim)\n")
