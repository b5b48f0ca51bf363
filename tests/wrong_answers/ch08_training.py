"""Chapter 8: teacher_forcing, make_batch, label_smoothed_loss, learning_rate, train_step, sequence_accuracy."""

ASSIGNMENT = "08-training"

WRONG = {
    # make_batch builds on teacher_forcing, yet keeps its points
    "teacher_forcing": (
        "def teacher_forcing(tgt):\n"
        "    return tgt[:, 1:], tgt[:, :-1]\n",
        "decoder_input and labels are swapped",
    ),
    "make_batch": (
        "def make_batch(sources, targets, pad_id=PAD, start_id=START, end_id=END):\n"
        "    S = max(len(ids) for ids in sources)\n"
        "    src = torch.full((len(sources), S), pad_id, dtype=torch.long)\n"
        "    for row, ids in enumerate(sources):\n"
        "        src[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)\n"
        "    full = [[start_id, *ids, end_id] for ids in targets]\n"
        "    tgt = torch.full((len(full), max(len(ids) for ids in full)), pad_id, dtype=torch.long)\n"
        "    for row, ids in enumerate(full):\n"
        "        tgt[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)\n"
        "    decoder_input, labels = teacher_forcing(tgt)\n"
        "    src_mask = padding_mask(src, pad_id)\n"
        "    tgt_mask = padding_mask(decoder_input, pad_id)  # forgot the causal part\n"
        "    return src, decoder_input, labels, src_mask, tgt_mask\n",
        "hide the future",
    ),
    # train_step builds on label_smoothed_loss, yet keeps its points
    "label_smoothed_loss": (
        "def label_smoothed_loss(log_probs, labels, pad_id, smoothing):\n"
        "    vocab = log_probs.shape[-1]\n"
        "    real = labels != pad_id\n"
        "    on_label = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)\n"
        "    others = log_probs.sum(dim=-1) - on_label  # padding gets its share too\n"
        "    per_token = -(1 - smoothing) * on_label - smoothing / (vocab - 1) * others\n"
        "    return torch.where(real, per_token, torch.zeros_like(per_token)).sum() / real.sum().clamp(min=1)\n",
        "no smoothing mass goes to padding",
    ),
    "learning_rate": (
        "def learning_rate(step, d_model, warmup, factor=1.0):\n"
        "    if bool((step < 1).any()):\n"
        "        raise ValueError('steps count from 1')\n"
        "    step = step.double() + 1\n"
        "    return factor * d_model ** -0.5 * torch.minimum(step ** -0.5, step * warmup ** -1.5)\n",
        "one step off",
    ),
    "train_step": (
        "def train_step(model, optimizer, src, decoder_input, labels, smoothing=0.1):\n"
        "    model.train()\n"
        "    loss = label_smoothed_loss(model(src, decoder_input), labels, model.pad_id, smoothing)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
        "    return loss.detach()\n",
        "optimizer.zero_grad()",
    ),
    "sequence_accuracy": (
        "def sequence_accuracy(predicted, labels, pad_id):\n"
        "    real = labels != pad_id\n"
        "    right = (predicted == labels) & real\n"
        "    exact_match = (right | ~real).all(dim=-1).double().mean()\n"
        "    return exact_match, (predicted == labels).double().mean()\n",
        "token accuracy counts real labels only",
    ),
}

# The right numbers (train_step, which builds on it, passes with it in the notebook too), through a
# library loss that does the exercise's cross-entropy.
FORBIDDEN = (
    "label_smoothed_loss",
    "def label_smoothed_loss(log_probs, labels, pad_id, smoothing):\n"
    "    vocab = log_probs.shape[-1]\n"
    "    real = labels != pad_id\n"
    "    nll = torch.nn.functional.nll_loss(log_probs.transpose(1, 2), labels, ignore_index=pad_id,\n"
    "                                       reduction='sum')\n"
    "    on_label = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)\n"
    "    others = log_probs.sum(dim=-1) - on_label - log_probs[..., pad_id]\n"
    "    others = torch.where(real, others, torch.zeros_like(others)).sum()\n"
    "    return ((1 - smoothing) * nll - smoothing / (vocab - 2) * others) / real.sum().clamp(min=1)\n",
)
