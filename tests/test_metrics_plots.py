"""Run observability: JSONL + TensorBoard agree, a killed run's last line is tolerated, PNGs are real."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clipworks.cli import app
from clipworks.plots import plot_confusion, plot_retrieval, plot_run
from clipworks.train import metrics
from clipworks.train.metrics import MetricsLogger, read_metrics

runner = CliRunner()


def _log_run(run_dir, tensorboard=True):
    with MetricsLogger(run_dir, tensorboard=tensorboard) as log:
        for step in range(1, 6):
            log.log(step, {"loss": 3.0 / step, "lr": 1e-3 * step, "logit_scale": 14.0 + step,
                           "samples_per_s": torch.tensor(400.0 + step), "data_wait_pct": 2.5, "skipped": 0})
        log.log(5, {"zeroshot_top1": 0.42}, split="eval")
        log.log(6, {"loss": float("nan")})


def _open_png(path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im


def _no_temp_files(directory):
    assert not [p.name for p in directory.iterdir() if ".tmp-" in p.name]


def test_jsonl_and_tensorboard_agree(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _log_run(tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 7
    first = json.loads(lines[0])
    assert first["step"] == 1 and first["split"] == "train" and isinstance(first["time"], float)
    assert first["loss"] == 3.0 and first["samples_per_s"] == 401.0 and first["skipped"] == 0
    assert json.loads(lines[5]) | {"time": 0} == {"step": 5, "split": "eval", "time": 0, "zeroshot_top1": 0.42}
    assert json.loads(lines[6])["loss"] is None  # NaN kept out of the file: it stays strict JSON
    assert read_metrics(tmp_path) == [json.loads(line) for line in lines]

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([e.value for e in loss[:5]], [3.0 / s for s in range(1, 6)], rtol=1e-6)
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("eval/zeroshot_top1")] == [(5, 0.42)]


def test_logger_refuses_reserved_names_and_writes_without_tensorboard(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        with pytest.raises(ValueError, match="'step'"):
            log.log(1, {"step": 2.0})
        with pytest.raises(ValueError, match="'loss' must be a number"):
            log.log(1, {"loss": "low"})
        log.log(1, {"loss": 1.0})
    assert not (tmp_path / "tensorboard").exists()
    assert [r["loss"] for r in read_metrics(tmp_path)] == [1.0]


def test_missing_tensorboard_warns_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    monkeypatch.setattr(metrics, "_warned_no_tensorboard", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("a", "b"):
            with MetricsLogger(tmp_path / name) as log:
                log.log(1, {"loss": 1.0})
    assert len([w for w in caught if "TensorBoard" in str(w.message)]) == 1
    assert read_metrics(tmp_path / "b")[0]["loss"] == 1.0


def test_read_metrics_tolerates_a_truncated_last_line_only(tmp_path):
    _log_run(tmp_path, tensorboard=False)
    path = tmp_path / "metrics.jsonl"
    with open(path, "a") as f:
        f.write('{"step": 7, "split": "tr')
    assert len(read_metrics(tmp_path)) == 7
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '{"step": 2, "lo', *lines[1:3]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2:"):
        read_metrics(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_metrics(tmp_path / "nowhere")


def test_plot_run_and_cli(tmp_path):
    _log_run(tmp_path)
    with MetricsLogger(tmp_path, tensorboard=False) as log:  # a resumed run logs steps 4-5 again
        log.log(4, {"loss": 9.0})
    (png,) = plot_run(tmp_path)
    assert png == tmp_path / "curves.png"
    assert _open_png(png).size[0] > 400
    _no_temp_files(tmp_path)

    r = runner.invoke(app, ["plot", str(tmp_path)])
    assert r.exit_code == 0, r.stderr
    assert str(png) in r.stdout
    empty = tmp_path / "empty_run"
    empty.mkdir()
    r = runner.invoke(app, ["plot", str(empty)])
    assert r.exit_code == 1 and "empty_run" in r.stderr and "metrics.jsonl" in r.stderr


def test_plot_run_without_known_metrics(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"grad_norm": 1.0})
    with pytest.raises(ValueError, match="found: grad_norm"):
        plot_run(tmp_path)


def test_confusion_png(tmp_path):
    confusion = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    path = plot_confusion(confusion, ["shirt", "bag", "boot"], tmp_path / "confusion.png", title="zero-shot")
    _open_png(path)
    _no_temp_files(tmp_path)
    with pytest.raises(ValueError, match="2 class names"):
        plot_confusion(confusion, ["shirt", "bag"], tmp_path / "bad.png")


def test_retrieval_png(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    images = [[Image.fromarray(gray), rgb, Image.fromarray(rgb)], [gray]]
    scores = [[0.31, 0.29, 0.2], [0.5]]
    path = plot_retrieval(["a photo of a bag", "a photo of a boot"], images, scores, tmp_path / "retrieval.png")
    _open_png(path)
    with pytest.raises(ValueError, match="2 images but 1 scores"):
        plot_retrieval(["q"], [[gray, gray]], torch.tensor([[0.1]]), tmp_path / "bad.png")
