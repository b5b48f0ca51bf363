"""Chapter 8's book page: its figure and analysis helpers (plotting/training.py) on tiny runs, and
the full training run from a fresh seed (slow)."""

from __future__ import annotations

from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from transformer_course.number_task import make_task  # noqa: E402
from transformer_course.plotting import training as figures  # noqa: E402
from transformer_course.training import TrainConfig, evaluate, smoothing_floor, train  # noqa: E402

TINY = TrainConfig(steps=30, batch_size=16, d_model=16, n_heads=2, n_layers=1, d_ff=32, warmup=10,
                   eval_every=10, n_train=400, n_validation=40, n_test=60)


@pytest.fixture(scope="module")
def tiny_run():
    task = make_task(TINY.seed, TINY.n_train, TINY.n_validation, TINY.n_test)
    model, history = train(TINY, task=task, progress=False)
    return task, model, history


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_the_data_figures_draw():
    task = make_task(0, 100, 10, 10)
    ax = figures.plot_teacher_forcing(list("2005"), source="two thousand and five")
    texts = [t.get_text() for t in ax.texts]
    # The target once, the labels and the inputs once each: <start> twice, <end> twice.
    assert texts.count("<start>") == 2 and texts.count("<end>") == 2
    fig = figures.plot_batch(task, [7, 2005, 302040])
    assert len(fig.axes) == 5  # source, decoder input, labels, the decoder mask, the note
    words = [t.get_text() for t in fig.axes[0].texts]
    assert words[:2] == ["seven", "<pad>"] and "thousand" in words


def test_the_schedule_figure_peaks_at_the_warm_up():
    fig = figures.plot_schedule(d_model=64, warmup=400, steps=1200)
    x, y = fig.axes[0].lines[0].get_data()
    assert x[y.argmax()] == 400
    assert y.max() == pytest.approx(1 / 160)
    assert len(fig.axes) == 2  # ours and the paper's
    assert len(figures.plot_schedule(64, 400, 1200, paper=None).axes) == 1


def test_the_run_figures_draw_the_history(tiny_run):
    task, _, history = tiny_run
    fig = figures.plot_training(history, floor=smoothing_floor(len(task.tgt_vocab), TINY.smoothing))
    loss_ax, lr_ax, acc_ax = fig.axes
    assert len(loss_ax.lines[0].get_xdata()) == TINY.steps
    assert list(loss_ax.lines[2].get_xdata()) == history.eval_steps == [10, 20, 30]
    assert list(lr_ax.lines[0].get_ydata()) == history.lr
    assert list(acc_ax.lines[0].get_ydata()) == pytest.approx([100 * e for e in history.val_exact])
    ax = figures.plot_ablation([("a", history), ("b", history)], up_to=20)
    assert list(ax.lines[0].get_xdata()) == [10, 20]


def test_moving_average():
    assert figures._moving_average([1, 2, 3, 4], 2).tolist() == [1.0, 1.5, 2.5, 3.5]


def test_decoders_agree_with_evaluate(tiny_run):
    task, model, _ = tiny_run
    numbers = list(task.test)
    comparison = figures.compare_decoders(model, task, numbers, width=3, batch_size=25)
    assert comparison.greedy_exact == pytest.approx(evaluate(model, task, numbers)["exact"])
    greedy = figures.decode_numbers(model, task, numbers)
    beam = figures.decode_numbers(model, task, numbers, beam=3)
    assert [(n, g, b) for n, g, b in zip(numbers, greedy, beam) if g != b] == comparison.disagreements
    assert all(isinstance(d, str) and len(d) <= 8 for d in greedy)


def test_alignment_is_the_last_layers_cross_attention(tiny_run):
    task, model, _ = tiny_run
    weights, rows, columns = figures.alignment(model, task, 302040)
    assert columns == task.source_words(302040)
    assert weights.shape == (len(rows), len(columns))
    assert torch.allclose(weights.sum(-1), torch.ones(len(rows)), atol=1e-5)  # each row a distribution
    assert "".join(rows).removesuffix("<end>") == figures.decode_numbers(model, task, [302040])[0]
    fig = figures.plot_alignment(model, task, [302040, 7])
    assert len([ax for ax in fig.axes if ax.images]) == 2


def test_without_positions_the_source_is_a_bag_of_words():
    """The ablation's claim on the page: reordered words give identical outputs."""
    config = replace(TINY, positions=False, steps=5)
    task = make_task(config.seed, config.n_train, config.n_validation, config.n_test)
    model, _ = train(config, task=task, progress=False)
    with_positions, _ = train(replace(config, positions=True), task=task, progress=False)
    src = torch.tensor([task.encode_source(203), task.encode_source(302)])  # same words, other order
    tgt = torch.tensor([[1, 5, 3], [1, 5, 3]])
    with torch.no_grad():
        out = model(src, tgt)
        assert torch.allclose(out[0], out[1], atol=1e-5)
        out = with_positions(src, tgt)
        assert not torch.allclose(out[0], out[1], atol=1e-3)


@pytest.mark.slow
def test_the_full_run_from_another_seed_learns_the_task():
    """The book's default run, from seed 1 (another task split, other weights, other batches):
    >= 97 % exact match on that task's held-out test numbers. About two minutes on two cores."""
    config = replace(TrainConfig(), seed=1)
    task = make_task(config.seed, config.n_train, config.n_validation, config.n_test)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the book does: as fast as two, and robust when the machine is busy
    try:
        model, history = train(config, task=task, progress=False)
        scores = evaluate(model, task, task.test)
    finally:
        torch.set_num_threads(threads)
    assert scores["exact"] >= 0.97, f"test exact match {scores['exact']:.2%} (validation: {history.val_exact})"
    assert not set(task.test) & set(task.train)
