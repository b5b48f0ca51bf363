"""Chapter 8's training run: time to 97 % validation exact match, and the cost of one step.

Two figures, measured in the same run:

1. **Time to 97 %**: the default ``TrainConfig()`` run (the book's full run), evaluated on the
   1,000 validation numbers every ``--eval-every`` steps; the wall-clock time (evaluations
   included) and the step at which greedy exact match first reaches 97 %. The run stops after
   ``--steps`` steps: its first steps are exactly those of a longer run (the schedule does not
   depend on the run's length, and the batches come from one seeded generator).
2. **Step time against PyTorch**: one training step (forward, label-smoothed loss, backward,
   Adam) of the reference encoder-decoder against an ``nn.Transformer`` of the same size (same
   d_model, heads, layers, d_ff, dropout, post-LN, ReLU) with its own embeddings, sinusoidal
   positions and output layer, on the same batches of 128 training examples, after warm-up steps.
   (``nn.Transformer`` ends each stack with a LayerNorm even in post-LN: 256 more parameters.)
   The target: ours / torch <= 1.3.

    python bench/bench_train.py                  # both, on the CPU
    python bench/bench_train.py --skip-run       # the step-time ratio only

A script that prints figures, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from dataclasses import replace

import torch
from bench_mha import interleaved_medians  # (bench/ is on sys.path when this script runs)
from torch import nn

from transformer_course.number_task import PAD, make_task
from transformer_course.positional import sinusoidal_encoding
from transformer_course.training import TrainConfig, build_model, label_smoothed_loss, make_batch, train

TARGET_RATIO = 1.3
TARGET_EXACT = 0.97


class TorchSeq2Seq(nn.Module):
    """``nn.Transformer`` with what the reference model has around it: token embeddings scaled by
    sqrt(d_model), sinusoidal positions (dropout after them), and a generator (linear + log_softmax)."""

    def __init__(self, config: TrainConfig, src_vocab: int, tgt_vocab: int, max_len: int = 32) -> None:
        super().__init__()
        self.d_model = config.d_model
        self.src_embed = nn.Embedding(src_vocab, config.d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab, config.d_model)
        self.register_buffer("pe", sinusoidal_encoding(max_len, config.d_model), persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.transformer = nn.Transformer(
            d_model=config.d_model, nhead=config.n_heads, num_encoder_layers=config.n_layers,
            num_decoder_layers=config.n_layers, dim_feedforward=config.d_ff, dropout=config.dropout,
            batch_first=True)
        self.proj = nn.Linear(config.d_model, tgt_vocab)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def embed(self, table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(table(ids) * math.sqrt(self.d_model) + self.pe[: ids.shape[1]])

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """``(batch, S)``, ``(batch, T)`` ids -> ``(batch, T, vocab)`` log-probabilities."""
        T = tgt.shape[1]
        # Boolean masks throughout, True = blocked (torch's convention; mixing float and bool warns).
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt.device).triu(1)  # (T, T): the future
        src_padding, tgt_padding = src == PAD, tgt == PAD  # True = ignore (torch's convention)
        hidden = self.transformer(
            self.embed(self.src_embed, src), self.embed(self.tgt_embed, tgt), tgt_mask=causal, tgt_is_causal=True,
            src_key_padding_mask=src_padding, tgt_key_padding_mask=tgt_padding,
            memory_key_padding_mask=src_padding)
        return torch.log_softmax(self.proj(hidden), dim=-1)


def time_to_target(config: TrainConfig) -> None:
    print(f"1. the default run (d_model {config.d_model}, {config.n_layers}+{config.n_layers} layers, "
          f"batch {config.batch_size}), validation every {config.eval_every} steps, at most {config.steps} steps")
    model, history = train(config, progress=False)
    for step, exact, token, seconds in zip(history.eval_steps, history.val_exact, history.val_token,
                                           history.seconds):
        print(f"   step {step:5d}  {seconds:6.1f} s  exact {100 * exact:6.2f} %  token {100 * token:6.2f} %")
    reached = [(s, t) for s, e, t in zip(history.eval_steps, history.val_exact, history.seconds) if e >= TARGET_EXACT]
    if reached:
        step, seconds = reached[0]
        print(f"   time to {TARGET_EXACT:.0%} validation exact match: {seconds:.1f} s (step {step}, "
              f"evaluations included)")
    else:
        print(f"   {TARGET_EXACT:.0%} validation exact match not reached in {config.steps} steps")


def step_time_ratio(config: TrainConfig, min_run_time: float, n_batches: int = 16) -> float:
    task = make_task(config.seed, config.n_train, config.n_validation, config.n_test)
    sources, targets = task.pairs(task.train)
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(n_batches):
        rows = torch.randint(len(sources), (config.batch_size,), generator=generator).tolist()
        src, decoder_input, labels, _, _ = make_batch([sources[i] for i in rows], [targets[i] for i in rows])
        batches.append((src, decoder_input, labels))

    torch.manual_seed(0)
    ours = build_model(config, task)
    theirs = TorchSeq2Seq(config, len(task.src_vocab), len(task.tgt_vocab))
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())

    # Same sizes, same work: the parameter counts agree, and both give (batch, T, vocab).
    src, decoder_input, _ = batches[0]
    assert ours(src, decoder_input).shape == theirs(src, decoder_input).shape

    def stepper(model: nn.Module):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=config.betas, eps=config.eps)
        cycle = itertools.cycle(batches)

        def step() -> None:
            src, decoder_input, labels = next(cycle)
            model.train()
            optimizer.zero_grad()
            loss = label_smoothed_loss(model(src, decoder_input), labels, PAD, config.smoothing)
            loss.backward()
            optimizer.step()
        return step

    ours_step, theirs_step = stepper(ours), stepper(theirs)
    for _ in range(10):  # warm-up: allocator, Adam's state, lazy initialisation
        ours_step()
        theirs_step()
    t_ours, t_theirs = interleaved_medians([ours_step, theirs_step], min_run_time)
    ratio = t_ours / t_theirs
    print(f"2. one training step, batch {config.batch_size} (forward, loss, backward, Adam), median of "
          f"interleaved blocks")
    print(f"   reference EncoderDecoder {t_ours * 1e3:7.2f} ms   ({n_ours:,} parameters)")
    print(f"   nn.Transformer           {t_theirs * 1e3:7.2f} ms   ({n_theirs:,} parameters)")
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"   ours / torch = {ratio:.2f}: {verdict} the target <= {TARGET_RATIO}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200, help="steps of the default run (default 1200, the full run)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--min-run-time", type=float, default=3.0, help="seconds per step-time measurement")
    parser.add_argument("--skip-run", action="store_true", help="only the step-time ratio")
    args = parser.parse_args()
    config = replace(TrainConfig(), steps=args.steps, eval_every=args.eval_every)
    print(f"torch {torch.__version__}, cpu, threads {torch.get_num_threads()}")
    start = time.perf_counter()
    if not args.skip_run:
        time_to_target(config)
    step_time_ratio(config, args.min_run_time)
    print(f"(benchmark took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
