"""Chapter 3: QKVProjection, score_matrix, hard_lookup, soft_lookup."""

ASSIGNMENT = "03-qkv"

WRONG = {
    "QKVProjection": (
        "class QKVProjection(nn.Module):\n"
        "    def __init__(self, d_model, d_k, d_v=None, bias=True):\n"
        "        super().__init__()\n"
        "        self.q_proj = nn.Linear(d_model, d_k, bias=bias)\n"
        "        self.k_proj = nn.Linear(d_model, d_k, bias=bias)\n"
        "        self.v_proj = nn.Linear(d_model, d_k if d_v is None else d_v, bias=bias)\n"
        "\n"
        "    def forward(self, x):\n"
        "        q = self.q_proj(x)\n"
        "        return q, q, q\n",
        "each needs its own layer",
    ),
    # hard_lookup and soft_lookup call these scaled scores, yet keep their points
    "score_matrix": (
        "def score_matrix(q, k):\n    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n",
        "the scaling comes in chapter 4",
    ),
    "hard_lookup": (
        "def hard_lookup(q, k, v):\n"
        "    best = score_matrix(q, k).argmin(dim=-1)\n"
        "    weights = nn.functional.one_hot(best, k.shape[-2]).to(q.dtype)\n"
        "    return weights @ v, weights\n",
        "worst key (argmin)",
    ),
    "soft_lookup": (
        "def soft_lookup(q, k, v):\n"
        "    weights = torch.softmax(score_matrix(q, k), dim=-2)\n"
        "    return weights @ v, weights\n",
        "the softmax ran over the queries",
    ),
}

FORBIDDEN = (
    "soft_lookup",
    "def soft_lookup(q, k, v):\n"
    "    output = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)\n"
    "    return output, torch.softmax(score_matrix(q, k), dim=-1)\n",
)
