import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import clipworks
from clipworks.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    clipworks.save_pretrained(clipworks.create_model("tiny-vit"), d)
    return d


def test_info_name_and_path(checkpoint):
    r = runner.invoke(app, ["info", "tiny-vit"])
    assert r.exit_code == 0 and json.loads(r.stdout)["config"]["embed_dim"] == 64
    r = runner.invoke(app, ["info", str(checkpoint)])
    assert r.exit_code == 0 and json.loads(r.stdout)["format"] == "native"
    r = runner.invoke(app, ["info", "ViT-Q-1"])
    assert r.exit_code == 1 and "ViT-B-32" in r.stderr


def test_convert_to_hf_and_back(tmp_path, checkpoint):
    r = runner.invoke(app, ["convert", str(checkpoint), str(tmp_path / "hf"), "--to", "hf"])
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "hf" / "config.json").is_file()
    r = runner.invoke(app, ["convert", str(tmp_path / "hf"), str(tmp_path / "native")])
    assert r.exit_code == 0, r.stderr
    a, b = clipworks.load_checkpoint(checkpoint), clipworks.load_checkpoint(tmp_path / "native")
    tokens = clipworks.tokenize(["a cat"])
    assert np.allclose(a.encode_text(tokens).detach(), b.encode_text(tokens).detach(), atol=1e-6)


def test_failed_convert_writes_nothing(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    r = runner.invoke(app, ["convert", str(bad), str(tmp_path / "out")])
    assert r.exit_code == 1 and str(bad) in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_embed_skips_bad_images_and_lists_them(tmp_path, image_dir, checkpoint):
    out = tmp_path / "emb.npy"
    r = runner.invoke(app, ["embed", "--model", str(checkpoint), str(image_dir), "--out", str(out), "--batch-size", "2"])
    assert r.exit_code == 0, r.stderr
    emb = np.load(out)
    rows = out.with_suffix(".paths.txt").read_text().splitlines()
    assert emb.shape == (4, 64) and len(rows) == 4
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert "skipped 3" in r.stderr
    for name in ("truncated.jpg", "empty.png", "notes.png"):
        assert name in r.stderr and not any(name in row for row in rows)
    # the same image embedded alone gives the same row
    model, _, preprocess = clipworks.create_model_and_transforms(str(checkpoint))
    from clipworks.image.decode import load_image

    alone = model.encode_image(preprocess(load_image(rows[0]))[None], normalize=True).detach().numpy()
    assert np.allclose(alone, emb[0], atol=1e-5)


def test_embed_strict_stops_and_writes_nothing(tmp_path, image_dir, checkpoint):
    out = tmp_path / "emb.npy"
    r = runner.invoke(app, ["embed", "--model", str(checkpoint), str(image_dir), "--out", str(out), "--strict"])
    assert r.exit_code == 1 and "empty.png" in r.stderr
    assert not out.exists()


def test_embed_directory_given_as_image_is_reported(tmp_path, image_dir, checkpoint):
    r = runner.invoke(app, ["embed", "--model", str(checkpoint), str(image_dir / "0_astronaut.jpg"), str(image_dir / "missing.jpg"),
                            "--out", str(tmp_path / "e.npy")])
    assert r.exit_code == 0 and "missing.jpg" in r.stderr


def test_embed_text(tmp_path, checkpoint):
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat\na dog\n&quot;ﬁne&quot;\n")
    out = tmp_path / "text.npy"
    r = runner.invoke(app, ["embed", "--model", str(checkpoint), "--text", str(captions), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    assert np.load(out).shape == (3, 64)


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "clipworks", "info", "--list"], capture_output=True, text=True)
    assert r.returncode == 0 and "ViT-B-32" in r.stdout


def test_emit_json_is_strict_json(capsys):
    """NaN (an undefined score) and numpy values print as strict JSON: null and plain numbers."""
    import numpy as np

    from clipworks.cli.common import emit_json

    emit_json({"score": float("nan"), "n": np.int64(3), "v": np.float32(0.5), "name": "café"})
    out = capsys.readouterr().out
    assert json.loads(out) == {"score": None, "n": 3, "v": 0.5, "name": "café"} and "NaN" not in out
