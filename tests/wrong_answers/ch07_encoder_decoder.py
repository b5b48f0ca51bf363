"""Chapter 7: FeedForward, EncoderLayer, DecoderLayer, transformer_forward, greedy_decode, beam_search."""

ASSIGNMENT = "07-encoder-decoder"

WRONG = {
    # EncoderLayer and DecoderLayer build on FeedForward, yet keep their points
    "FeedForward": (
        "class FeedForward(nn.Module):\n"
        "    def __init__(self, d_model, d_ff, dropout=0.0, activation='relu'):\n"
        "        super().__init__()\n"
        "        self.linear1 = nn.Linear(d_model, d_ff)\n"
        "        self.linear2 = nn.Linear(d_ff, d_model)\n"
        "\n"
        "    def forward(self, x):\n"
        "        return self.linear2(self.linear1(x))\n",
        "sets negatives to 0",
    ),
    "EncoderLayer": (
        "class EncoderLayer(nn.Module):\n"
        "    def __init__(self, d_model, n_heads, d_ff, dropout=0.0, activation='relu', norm_first=False,\n"
        "                 layer_norm_eps=1e-5):\n"
        "        super().__init__()\n"
        "        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)\n"
        "        self.feed_forward = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)\n"
        "        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)\n"
        "        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)\n"
        "\n"
        "    def forward(self, x, mask=None):\n"
        "        x = self.norm1(x + self.self_attn(x, x, x, mask)[0])\n"
        "        return self.norm2(x + self.feed_forward(x))\n",
        "post-LN instead of pre-LN",
    ),
    "DecoderLayer": (
        "class DecoderLayer(nn.Module):\n"
        "    def __init__(self, d_model, n_heads, d_ff, dropout=0.0, activation='relu', norm_first=False,\n"
        "                 layer_norm_eps=1e-5):\n"
        "        super().__init__()\n"
        "        self.norm_first = norm_first\n"
        "        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)\n"
        "        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)\n"
        "        self.feed_forward = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)\n"
        "        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)\n"
        "        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)\n"
        "        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps)\n"
        "\n"
        "    def forward(self, x, memory, self_mask=None, memory_mask=None):\n"
        "        parts = [lambda h: self.self_attn(h, h, h)[0],  # forgot self_mask\n"
        "                 lambda h: self.cross_attn(h, memory, memory, memory_mask)[0],\n"
        "                 self.feed_forward]\n"
        "        for norm, part in zip((self.norm1, self.norm2, self.norm3), parts):\n"
        "            x = x + part(norm(x)) if self.norm_first else norm(x + part(x))\n"
        "        return x\n",
        "must not see the future",
    ),
    "transformer_forward": (
        "def transformer_forward(model, src, tgt):\n"
        "    S, T = src.shape[1], tgt.shape[1]\n"
        "    src_mask = (src != model.pad_id)[:, None, None, :]\n"
        "    tgt_mask = (tgt != model.pad_id)[:, None, None, :] & torch.tril(torch.ones(T, T, dtype=torch.bool))\n"
        "    x = model.src_embed.embedding(src) + model.positions.pe[:S]\n"
        "    for layer in model.encoder.layers:\n"
        "        x = layer(x, src_mask)\n"
        "    memory = model.encoder.norm(x)\n"
        "    y = model.tgt_embed.embedding(tgt) + model.positions.pe[:T]\n"
        "    for layer in model.decoder.layers:\n"
        "        y = layer(y, memory, tgt_mask, src_mask)\n"
        "    return torch.log_softmax(model.generator.proj(model.decoder.norm(y)), dim=-1)\n",
        "sqrt(d_model)",
    ),
    # beam_search would be graded with this greedy_decode if it used it; it keeps its points
    "greedy_decode": (
        "def greedy_decode(model, src, max_len, start_id, end_id):\n"
        "    src_mask = model.make_src_mask(src)\n"
        "    memory = model.encode(src, src_mask)\n"
        "    out = torch.full((src.shape[0], 1), start_id, dtype=torch.long)\n"
        "    for _ in range(max_len - 1):\n"
        "        hidden = model.decode(out, memory, model.make_tgt_mask(out), src_mask)\n"
        "        next_token = model.generator(hidden[:, -1]).argmax(-1)\n"
        "        out = torch.cat([out, next_token[:, None]], dim=1)\n"
        "        if (out == end_id).any(dim=1).all():\n"
        "            break\n"
        "    return out\n",
        "fill the rest of its row with model.pad_id",
    ),
    "beam_search": (
        "def beam_search(model, src, max_len, start_id, end_id, width=4, alpha=0.6):\n"
        "    # a 'beam search' that keeps only the best hypothesis: greedy decoding with a score\n"
        "    memory_mask = model.make_src_mask(src)\n"
        "    memory = model.encode(src, memory_mask)\n"
        "    out = torch.full((src.shape[0], 1), start_id, dtype=torch.long)\n"
        "    score = torch.zeros(src.shape[0], dtype=torch.float64)\n"
        "    done = torch.zeros(src.shape[0], dtype=torch.bool)\n"
        "    for _ in range(max_len - 1):\n"
        "        step = model.generator(model.decode(out, memory, model.make_tgt_mask(out), memory_mask)[:, -1])\n"
        "        best, token = step.max(-1)\n"
        "        token = token.masked_fill(done, model.pad_id)\n"
        "        score = score + best.masked_fill(done, 0.0)\n"
        "        out = torch.cat([out, token[:, None]], dim=1)\n"
        "        done = done | (token == end_id)\n"
        "        if done.all():\n"
        "            break\n"
        "    return out, score\n",
        "beam search with width=2",
    ),
}

FORBIDDEN = (
    "DecoderLayer",
    "class DecoderLayer(nn.Module):\n"
    "    def __init__(self, d_model, n_heads, d_ff, dropout=0.0, activation='relu', norm_first=False,\n"
    "                 layer_norm_eps=1e-5):\n"
    "        super().__init__()\n"
    "        self.layer = nn.TransformerDecoderLayer(d_model, n_heads, d_ff, dropout, activation,\n"
    "                                                layer_norm_eps, batch_first=True, norm_first=norm_first)\n"
    "\n"
    "    def forward(self, x, memory, self_mask=None, memory_mask=None):\n"
    "        return self.layer(x, memory, tgt_mask=None if self_mask is None else ~self_mask)\n",
)
