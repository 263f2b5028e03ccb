"""WiSE-FT interpolation: exact endpoints and midpoint, refusal of mismatched models, CLI across formats."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import clipworks
from clipworks.checkpoints import openai
from clipworks.cli import app
from clipworks.interpolate import interpolate

runner = CliRunner()


def _pair(name: str = "tiny-vit") -> tuple[clipworks.Clip, clipworks.Clip]:
    torch.manual_seed(1)
    a = clipworks.create_model(name)
    torch.manual_seed(2)
    return a, clipworks.create_model(name)


@pytest.fixture(scope="module")
def pair() -> tuple[clipworks.Clip, clipworks.Clip]:
    return _pair()


def _assert_state_equal(model: clipworks.Clip, want: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == want.keys()
    for k in got:
        assert torch.equal(got[k], want[k]), k


def test_endpoints_and_midpoint_are_exact(pair):
    a, b = pair
    sa = {k: v.clone() for k, v in a.state_dict().items()}
    sb = {k: v.clone() for k, v in b.state_dict().items()}
    _assert_state_equal(interpolate(a, b, 0.0), sa)
    _assert_state_equal(interpolate(a, b, 1.0), sb)
    _assert_state_equal(interpolate(a, b, 0.5), {k: 0.5 * sa[k] + 0.5 * sb[k] for k in sa})
    _assert_state_equal(a, sa)  # inputs untouched
    _assert_state_equal(b, sb)


def test_integer_buffers_come_from_b():
    a, b = _pair("tiny-rn")
    a.visual.bn1.num_batches_tracked.fill_(3)
    b.visual.bn1.num_batches_tracked.fill_(7)
    mixed = interpolate(a, b, 0.25)
    assert int(mixed.visual.bn1.num_batches_tracked) == 7
    torch.testing.assert_close(mixed.visual.bn1.running_var,
                               0.75 * a.visual.bn1.running_var + 0.25 * b.visual.bn1.running_var)


def test_refuses_different_configs_and_bad_alpha(pair):
    a, _ = pair
    with pytest.raises(ValueError, match="quick_gelu"):
        interpolate(a, clipworks.create_model("tiny-vit-quickgelu"), 0.5)
    with pytest.raises(ValueError, match=r"vision_cfg\.layers"):
        interpolate(a, clipworks.create_model("tiny-rn"), 0.5)
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            interpolate(a, a, alpha)


def test_cli_across_formats(tmp_path, pair):
    a, b = pair
    clipworks.save_pretrained(a, tmp_path / "a")
    torch.save(openai.from_native(b.state_dict()), tmp_path / "b.pt")  # a bare OpenAI-layout state dict
    want = interpolate(a, b, 0.25).state_dict()

    r = runner.invoke(app, ["interpolate", str(tmp_path / "a"), str(tmp_path / "b.pt"), "--alpha", "0.25",
                            "--out", str(tmp_path / "mixed"), "--config", "tiny-vit"])
    assert r.exit_code == 0, r.stderr
    assert str(tmp_path / "mixed") in r.stdout
    _assert_state_equal(clipworks.load_checkpoint(tmp_path / "mixed"), want)

    r = runner.invoke(app, ["interpolate", str(tmp_path / "a"), str(tmp_path / "b.pt"), "--alpha", "0.25",
                            "--out", str(tmp_path / "mixed_hf"), "--config", "tiny-vit", "--format", "hf"])
    assert r.exit_code == 0, r.stderr
    for k, v in clipworks.load_checkpoint(tmp_path / "mixed_hf").state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)

    # A bare state dict does not record its activation; read as OpenAI's QuickGELU it differs from A.
    r = runner.invoke(app, ["interpolate", str(tmp_path / "a"), str(tmp_path / "b.pt"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "quick_gelu" in r.stderr
    assert not (tmp_path / "x").exists()
    r = runner.invoke(app, ["interpolate", str(tmp_path / "a"), str(tmp_path / "a"), "--alpha", "2",
                            "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and not (tmp_path / "x").exists()
