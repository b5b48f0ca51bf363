"""Chapter 1: build_vocab, tokens_to_ids, merge_pair, learn_bpe, embed_tokens,
cosine_similarity_matrix, nearest_neighbours."""

ASSIGNMENT = "01-tokens"

WRONG = {
    "build_vocab": (
        "def build_vocab(tokens, min_count=1):\n"
        "    vocab = {'<unk>': 0}\n"
        "    for token, count in Counter(tokens).most_common():\n"
        "        if count >= min_count:\n"
        "            vocab[token] = len(vocab)\n"
        "    return vocab\n",
        "alphabetical order",
    ),
    "tokens_to_ids": (
        "def tokens_to_ids(tokens, vocab):\n"
        "    return [vocab[token] for token in tokens if token in vocab]\n",
        "unknown tokens are left out",
    ),
    # learn_bpe calls this merge_pair, which does not skip the second id of a pair, yet keeps
    # its points: it is graded with the reference merge_pair.
    "merge_pair": (
        "def merge_pair(ids, pair, new_id):\n"
        "    merged, i = [], 0\n"
        "    while i < len(ids):\n"
        "        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):\n"
        "            merged.append(new_id)\n"
        "        else:\n"
        "            merged.append(ids[i])\n"
        "        i += 1\n"
        "    return merged\n",
        "skip both ids",
    ),
    "learn_bpe": (
        "def learn_bpe(words, num_merges):\n"
        "    ids = [b for word in words for b in word.encode('utf-8')]\n"
        "    merges = []\n"
        "    for step in range(num_merges):\n"
        "        counts = Counter(zip(ids, ids[1:]))\n"
        "        if not counts:\n"
        "            break\n"
        "        best = max(counts, key=counts.get)\n"
        "        ids = merge_pair(ids, best, 256 + step)\n"
        "        merges.append(best)\n"
        "    return merges\n",
        "across word boundaries",
    ),
    "embed_tokens": (
        "def embed_tokens(token_ids, table):\n    return table[token_ids]\n",
        "sqrt(d_model)",
    ),
    # nearest_neighbours calls this plain dot product, yet keeps its points.
    "cosine_similarity_matrix": (
        "def cosine_similarity_matrix(a, b):\n    return a @ b.transpose(-2, -1)\n",
        "plain dot products",
    ),
    "nearest_neighbours": (
        "def nearest_neighbours(query, table, k):\n"
        "    similarity = cosine_similarity_matrix(query.unsqueeze(-2), table).squeeze(-2)\n"
        "    order = torch.argsort(similarity, dim=-1)[..., :k]\n"
        "    return order, torch.gather(similarity, -1, order)\n",
        "least similar",
    ),
}

FORBIDDEN = (
    "cosine_similarity_matrix",
    "def cosine_similarity_matrix(a, b):\n"
    "    return torch.nn.functional.cosine_similarity(a.unsqueeze(-2), b.unsqueeze(-3), dim=-1)\n",
)
