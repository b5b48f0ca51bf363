"""Chapter 2: sinusoidal_encoding, add_positions, permutation_experiment, position_similarity,
LearnedPositionalEmbedding."""

ASSIGNMENT = "02-positions"

WRONG = {
    "sinusoidal_encoding": (
        "def sinusoidal_encoding(seq_len, d_model, *, device=None, dtype=torch.float32):\n"
        "    position = torch.arange(seq_len, dtype=dtype, device=device)[:, None]\n"
        "    angle = position / 10000 ** (torch.arange(0, d_model, 2, dtype=dtype, device=device) / d_model)\n"
        "    table = torch.zeros(seq_len, d_model, dtype=dtype, device=device)\n"
        "    table[:, 0::2] = torch.cos(angle)\n"
        "    table[:, 1::2] = torch.sin(angle[:, : d_model // 2])\n"
        "    return table\n",
        "sin and cos are swapped",
    ),
    # permutation_experiment and LearnedPositionalEmbedding may call this one, yet keep their points
    "add_positions": (
        "def add_positions(embeddings, table):\n"
        "    seq_len = embeddings.shape[-2]\n"
        "    if seq_len > table.shape[0]:\n"
        "        raise ValueError('too long')\n"
        "    return embeddings + table[1 : seq_len + 1]\n",
        "positions start at 0",
    ),
    "permutation_experiment": (
        "def permutation_experiment(x, perm, table=None):\n"
        "    if table is not None:\n"
        "        x = add_positions(x, table)\n"
        "    attend = lambda y: scaled_dot_product_attention(y, y, y)[0]\n"
        "    return attend(x)[..., perm, :], attend(x[..., perm, :])\n",
        "you added the positions before shuffling",
    ),
    "position_similarity": (
        "def position_similarity(table):\n    return table @ table[0]\n",
        "position 0 only",
    ),
    "LearnedPositionalEmbedding": (
        "class LearnedPositionalEmbedding(nn.Module):\n"
        "    def __init__(self, max_len, d_model, dropout=0.0):\n"
        "        super().__init__()\n"
        "        self.max_len = max_len\n"
        "        self.embedding = nn.Embedding(max_len, d_model)\n"
        "        self.dropout = nn.Dropout(dropout)\n"
        "\n"
        "    def forward(self, x):\n"
        "        if x.shape[1] > self.max_len:\n"
        "            raise ValueError('too long')\n"
        "        return self.dropout(x * self.embedding(torch.arange(x.shape[1], device=x.device)))\n",
        "add them",
    ),
}

FORBIDDEN = (
    "position_similarity",
    "from transformer_course.positional import position_similarity as reference_similarity\n\n"
    "def position_similarity(table):\n    return reference_similarity(table)\n",
)
