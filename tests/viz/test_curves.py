"""Training curves: what each panel draws, read back from the axes (ax.lines), for the
hand-written runs of tests/analysis/train_log_data.py."""

from __future__ import annotations

import cv2

from detcli.analysis.train_logs import read_run, read_runs
from detcli.viz.curves import (
    plot_comparison,
    plot_run,
    run_panels,
    write_comparison,
    write_run_curves,
)
from tests.analysis.train_log_data import RUN_A, RUN_B, write_run


def lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.lines}


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_a_run_has_panels_for_losses_lr_and_validation(tmp_path):
    run = read_run(write_run(tmp_path / "a", RUN_A))
    assert [p.title for p in run_panels(run)] == ["losses", "learning rate", "validation"]
    fig = plot_run(run)
    losses, lr, validation = visible_axes(fig)
    epochs = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert lines(losses) == {"loss_cls": (epochs, [1.0, 0.8, 0.6, 0.5, 0.5, 0.4]),
                             "loss_bbox": (epochs, [0.5, 0.4, 0.4, 0.4, 0.3, 0.3]),
                             "loss": (epochs, [1.5, 1.2, 1.0, 0.9, 0.8, 0.7])}
    assert lines(lr) == {"lr": (epochs, [0.002, 0.004, 0.01, 0.01, 0.001, 0.001])}
    assert lines(validation) == {
        "bbox_mAP (best 0.3000, epoch 2)": ([1.0, 2.0, 3.0], [0.1, 0.3, 0.25]),
        "bbox_mAP_50": ([1.0, 2.0, 3.0], [0.4, 0.6, 0.55]),
        "bbox_mAP_75": ([1.0, 2.0, 3.0], [0.05, 0.15, 0.125])}
    assert validation.lines[0].get_marker() == "o" and losses.lines[0].get_marker() == "None"
    assert losses.get_xlabel() == "epoch" and validation.get_ylabel() == "bbox_mAP"
    assert fig.get_suptitle() == "a: epoch 3"


def test_grad_norm_gets_a_panel_when_logged_and_iterations_on_request(tmp_path):
    run = read_run(write_run(tmp_path / "b", RUN_B))
    fig = plot_run(run, x="iter")
    titles = [ax.get_title() for ax in visible_axes(fig)]
    assert titles == ["losses", "learning rate", "gradient norm (before clipping)", "validation"]
    grad = visible_axes(fig)[2]
    assert lines(grad) == {"grad_norm": ([2.0, 4.0, 6.0, 8.0], [5.0, 4.0, 3.0, 2.5])}
    assert grad.get_xlabel() == "iteration"


def test_an_empty_log_draws_one_empty_panel(tmp_path):
    fig = plot_run(read_run(write_run(tmp_path / "e", [])))
    (ax,) = visible_axes(fig)
    assert ax.get_title() == "no records yet" and not ax.lines


def test_comparison_one_panel_per_key_one_line_per_run(tmp_path):
    runs = read_runs([write_run(tmp_path / "a", RUN_A), write_run(tmp_path / "b", RUN_B)])
    fig = plot_comparison(runs, ["loss", "bbox_mAP", "grad_norm"], "epoch")
    loss, mAP, grad = visible_axes(fig)
    assert lines(mAP) == {"a": ([1.0, 2.0, 3.0], [0.1, 0.3, 0.25]), "b": ([1.0, 2.0], [0.2, 0.4])}
    assert lines(loss)["b"] == ([0.5, 1.0, 1.5, 2.0], [1.8, 1.5, 1.4, 1.2])
    assert list(lines(grad)) == ["b"]  # run a did not clip
    assert [t.get_text() for t in mAP.get_legend().get_texts()] == ["a", "b"]
    assert mAP.lines[0].get_color() != mAP.lines[1].get_color()


def test_the_pngs_are_written(tmp_path):
    runs = read_runs([write_run(tmp_path / "a", RUN_A), write_run(tmp_path / "b", RUN_B)])
    run_png = write_run_curves(runs[0], tmp_path / "a" / "curves.png")
    both = write_comparison(runs, ["loss", "bbox_mAP"], "iter", tmp_path / "cmp.png")
    for path in (run_png, both):
        image = cv2.imread(str(path))
        assert image is not None and image.shape[1] > image.shape[0]  # two panels side by side
