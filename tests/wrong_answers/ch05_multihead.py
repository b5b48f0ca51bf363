"""Chapter 5: split_heads, merge_heads, MultiHeadAttention."""

ASSIGNMENT = "05-multihead"

WRONG = {
    # the classic bug; MultiHeadAttention calls this split_heads, yet keeps its points
    "split_heads": (
        "def split_heads(x, n_heads):\n"
        "    batch, seq, d_model = x.shape\n"
        "    return x.view(batch, n_heads, seq, d_model // n_heads)\n",
        "you reshaped to heads without the transpose",
    ),
    # the same bug on the way back; MultiHeadAttention calls it too
    "merge_heads": (
        "def merge_heads(x):\n"
        "    batch, heads, seq, d_head = x.shape\n"
        "    return x.reshape(batch, seq, heads * d_head)\n",
        "merged the heads without the transpose",
    ),
    "MultiHeadAttention": (
        "class MultiHeadAttention(nn.Module):\n"
        "    def __init__(self, d_model, n_heads, dropout=0.0, bias=True, kdim=None, vdim=None):\n"
        "        super().__init__()\n"
        "        self.n_heads = n_heads\n"
        "        self.q_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "        self.k_proj = nn.Linear(kdim or d_model, d_model, bias=bias)\n"
        "        self.v_proj = nn.Linear(vdim or d_model, d_model, bias=bias)\n"
        "        self.out_proj = nn.Linear(d_model, d_model, bias=bias)\n"
        "\n"
        "    def forward(self, query, key, value, mask=None):\n"
        "        q = split_heads(self.q_proj(query), self.n_heads)\n"
        "        k = split_heads(self.k_proj(key), self.n_heads)\n"
        "        v = split_heads(self.v_proj(value), self.n_heads)\n"
        "        heads, weights = scaled_dot_product_attention(q, k, v, mask)\n"
        "        return merge_heads(heads), weights  # forgot out_proj\n",
        "output projection",
    ),
}

FORBIDDEN = (
    "MultiHeadAttention",
    "class MultiHeadAttention(nn.Module):\n"
    "    def __init__(self, d_model, n_heads, dropout=0.0, bias=True, kdim=None, vdim=None):\n"
    "        super().__init__()\n"
    "        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, bias=bias,\n"
    "                                          kdim=kdim, vdim=vdim, batch_first=True)\n"
    "\n"
    "    def forward(self, query, key, value, mask=None):\n"
    "        blocked = None if mask is None else ~mask\n"
    "        return self.attn(query, key, value, attn_mask=blocked, average_attn_weights=False)\n",
)
