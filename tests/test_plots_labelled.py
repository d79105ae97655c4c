"""confusion.png and curves.png are readable without the code: names, axes, numbers, a visible single point."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from vcl_infer.probe.confusion_plot import confusion_figure, confusion_png  # noqa: E402


def _pixel(fig, ax, x, y) -> np.ndarray:
    """RGB of the rendered figure at data point (x, y) of ``ax``."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    px, py = ax.transData.transform((x, y))
    return image[int(round(image.shape[0] - py)), int(round(px))]


def test_the_confusion_matrix_names_its_classes_axes_and_counts():
    names = ["ApplyEyeMakeup", "Basketball", "CuttingInKitchen"]
    matrix = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 7]])
    fig = confusion_figure(matrix, names)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells[(0, 0)] == "5" and cells[(1, 0)] == "2" and cells[(2, 2)] == "7" and cells[(0, 1)] == "1"
    assert "15 of 18" in ax.get_title()
    assert any("share" in a.get_ylabel() for a in fig.axes[1:])  # the colour bar says what colour means
    dark, light = _pixel(fig, ax, 2, 2), _pixel(fig, ax, 0, 2)  # 7/7 of a row vs 0/5
    assert dark.sum() < light.sum()


def test_confusion_png_writes_a_png_and_checks_its_input(tmp_path):
    path = confusion_png(np.eye(2, dtype=int), ["a", "b"], tmp_path / "cm" / "confusion.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="class names"):
        confusion_figure(np.eye(3), ["a", "b"])


def test_a_run_with_one_logged_row_shows_its_point():
    pytest.importorskip("torch")  # training.pictures lives on the torch side
    from training.pictures import training_curves_figure

    data = {"step": np.array([1.0]), "epoch": np.array([0.0]), "loss": np.array([2.5]), "lr": np.array([0.1])}
    fig = training_curves_figure(data, title="run")
    loss_ax = fig.axes[0]
    line = loss_ax.get_lines()[0]
    assert list(line.get_xdata()) == [1.0] and line.get_marker() not in (None, "None", "", " ")
    assert loss_ax.get_xlabel() == "optimiser step" and loss_ax.get_ylabel() == "loss"
    assert "loss" in loss_ax.get_title() and "2.5" in loss_ax.get_title()
    assert _pixel(fig, loss_ax, 1.0, 2.5).sum() < 3 * 200  # drawn, not white
