"""Time our MultiHeadAttention against torch.nn.MultiheadAttention (forward + backward).

Both modules hold the same weights (copied with ``MultiHeadAttention.from_torch``) and see
the same inputs. Ours always returns per-head attention weights, so the like-for-like torch
call is ``need_weights=True, average_attn_weights=False``; torch with ``need_weights=False``
(its fused scaled_dot_product_attention kernel, which never forms the weights) is shown as
well, for scale. The target: ours / torch (like for like) <= 1.25.

    python bench/bench_mha.py                 # the best device (pick_device), float32
    python bench/bench_mha.py --device cpu --mask causal

A script that prints figures, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from transformer_course.device import pick_device
from transformer_course.masks import causal_mask, to_torch_module_mask
from transformer_course.multihead import MultiHeadAttention

TARGET_RATIO = 1.25

# (batch, seq, d_model, n_heads): small-model sizes a CPU course trains, and a longer one.
SHAPES = [
    (8, 128, 256, 8),
    (32, 64, 128, 4),
    (16, 128, 512, 8),
    (4, 512, 256, 8),
]


def forward_backward(module_call, x: torch.Tensor, grad: torch.Tensor) -> None:
    """One training step's worth of attention: forward, then backward from a fixed gradient."""
    x.grad = None
    out = module_call(x)
    out.backward(grad)


def interleaved_medians(fns, min_run_time: float) -> list[float]:
    """Median seconds per call of each function in ``fns``, measured in alternating rounds.

    Each round times a block of calls of every function in turn, so a slow spell of the
    machine (other processes, a noisy neighbour on a VM) slows all of them alike instead of
    whichever happened to be running; the ratio of medians is then a fair comparison.
    """
    for fn in fns:  # warm-up: allocator, kernels, lazy initialisation
        for _ in range(3):
            fn()
    calls = max(1, int(0.05 / _seconds(fns[0], 1)))  # blocks of about 50 ms
    samples: list[list[float]] = [[] for _ in fns]
    spent = 0.0
    while spent < min_run_time * len(fns) or len(samples[0]) < 5:
        for fn, times in zip(fns, samples):
            elapsed = _seconds(fn, calls)
            times.append(elapsed / calls)
            spent += elapsed
    return [statistics.median(times) for times in samples]


def _seconds(fn, calls: int) -> float:
    _sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync()
    return time.perf_counter() - start


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_shape(batch, seq, d_model, n_heads, *, device, dtype, mask_kind, min_run_time):
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(d_model, n_heads, batch_first=True, device=device, dtype=dtype)
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(batch, seq, d_model, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(batch, seq, d_model, device=device, dtype=dtype)
    mask = causal_mask(seq, device=device) if mask_kind == "causal" else None
    torch_mask = to_torch_module_mask(mask)

    def ours_call(x):
        return ours(x, x, x, mask)[0]

    def torch_call(x, need_weights):
        return theirs(x, x, x, attn_mask=torch_mask, need_weights=need_weights,
                      average_attn_weights=False)[0]

    # Same weights, same answer: a benchmark of two different computations would mean nothing.
    torch.testing.assert_close(ours_call(x), torch_call(x, True), atol=1e-4, rtol=1e-4)

    return interleaved_medians(
        [
            lambda: forward_backward(ours_call, x, grad),
            lambda: forward_backward(lambda x: torch_call(x, True), x, grad),
            lambda: forward_backward(lambda x: torch_call(x, False), x, grad),
        ],
        min_run_time,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: pick_device())")
    parser.add_argument("--mask", choices=["none", "causal"], default="none")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else pick_device()
    dtype = torch.float32
    if device.type == "cuda":  # compare like with like: plain float32 matmuls on both sides
        torch.backends.cuda.matmul.allow_tf32 = False

    print(f"torch {torch.__version__}, device {device}, {dtype}, threads {torch.get_num_threads()}, "
          f"mask {args.mask}; forward + backward, median time")
    header = (f"{'batch':>5} {'seq':>5} {'d_model':>7} {'heads':>5} | {'ours ms':>8} "
              f"{'torch ms':>8} {'ratio':>6} | {'torch fused ms':>14} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for batch, seq, d_model, n_heads in SHAPES:
        ours, like, fused = bench_shape(batch, seq, d_model, n_heads, device=device, dtype=dtype,
                                        mask_kind=args.mask, min_run_time=args.min_run_time)
        worst = max(worst, ours / like)
        print(f"{batch:>5} {seq:>5} {d_model:>7} {n_heads:>5} | {ours * 1e3:>8.2f} {like * 1e3:>8.2f} "
              f"{ours / like:>6.2f} | {fused * 1e3:>14.2f} {ours / fused:>6.2f}")
    verdict = "meets" if worst <= TARGET_RATIO else "MISSES"
    print(f"\nworst ours/torch (need_weights=True) = {worst:.2f}: {verdict} the target <= {TARGET_RATIO}")


if __name__ == "__main__":
    main()
