"""The PyTorch fast path: CPU threads, bf16 only where the processor has it, text rows grouped by length."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from clipworks import cpu
from clipworks.cli import app
from clipworks.encoder import Encoder
from clipworks.errors import UsageError

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n"
X86_OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes sha2 bf16 i8mm\n"
ARM_OLD = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n"


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    cpu._threads = None


def test_flags_parsed_from_x86_and_arm_cpuinfo():
    assert "avx512_bf16" in cpu.cpu_flags(X86)
    assert "bf16" in cpu.cpu_flags(ARM)
    assert cpu._BF16_FLAGS.isdisjoint(cpu.cpu_flags(X86_OLD) | cpu.cpu_flags(ARM_OLD))


@pytest.fixture
def cpu_reports(monkeypatch):
    """Make the processor report the given /proc/cpuinfo text."""
    real = cpu.cpu_flags

    def set_text(text: str) -> None:
        monkeypatch.setattr(cpu, "cpu_flags", lambda cpuinfo=None: real(text))
        cpu.cpu_supports_bf16.cache_clear()

    yield set_text
    cpu.cpu_supports_bf16.cache_clear()


@pytest.mark.parametrize("text", [X86, ARM])
def test_bf16_where_supported_computes_under_autocast(tiny_checkpoint, cpu_reports, text):
    cpu_reports(text)
    assert cpu.cpu_supports_bf16()
    fp32 = Encoder.load(str(tiny_checkpoint))
    with warnings.catch_warnings():
        warnings.simplefilter("error", cpu.PrecisionWarning)
        bf16 = Encoder.load(str(tiny_checkpoint), precision="bf16")
    assert bf16.autocast == torch.bfloat16 and bf16.dtype == torch.float32  # weights stay fp32
    texts = ["a photo of a dog", "a red car", "two cats on a sofa"]
    a, b = fp32.encode_text(texts), bf16.encode_text(texts)
    assert b.dtype == np.float32
    assert not np.array_equal(a, b)  # really computed in bf16
    assert (a * b).sum(1).min() > 0.99  # cosine: close to fp32
    pixels = torch.rand(2, 3, 32, 32)
    assert (fp32.encode_pixels(pixels) * bf16.encode_pixels(pixels)).sum(1).min() > 0.99


@pytest.mark.parametrize("text", [X86_OLD, ARM_OLD, ""])
def test_bf16_without_support_warns_and_stays_fp32(tiny_checkpoint, cpu_reports, text):
    cpu_reports(text)
    assert not cpu.cpu_supports_bf16()
    with pytest.warns(cpu.PrecisionWarning, match="without native bf16"):
        enc = Encoder.load(str(tiny_checkpoint), precision="bf16")
    assert enc.autocast is None and enc.dtype == torch.float32
    texts = ["a photo of a dog", "a red car"]
    np.testing.assert_array_equal(enc.encode_text(texts), Encoder.load(str(tiny_checkpoint)).encode_text(texts))


def test_fp32_never_asks_the_processor(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(cpu, "cpu_supports_bf16", lambda: pytest.fail("fp32 must not depend on detection"))
    assert Encoder.load(str(tiny_checkpoint)).autocast is None


def test_set_threads_applies_and_records(restore_threads):
    cpu.set_threads(1)
    assert torch.get_num_threads() == 1 and cpu.threads() == 1
    cpu.set_threads(None)  # leaves it
    assert torch.get_num_threads() == 1
    for bad in (0, -2, True, 1.5):
        with pytest.raises(UsageError):
            cpu.set_threads(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", ["embed", "classify"])
def test_threads_option_is_applied(tiny_checkpoint, image_dir, tmp_path, restore_threads, monkeypatch, command):
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    images = [str(p) for p in sorted(image_dir.glob("*.jpg"))[:2]]
    args = {"embed": ["embed", *images, "--model", str(tiny_checkpoint), "--out", str(tmp_path / "e.npy")],
            "classify": ["classify", *images, "--model", str(tiny_checkpoint), "--labels", "dog,cat"]}[command]
    r = CliRunner().invoke(app, [*args, "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert seen and set(seen) == {1} and cpu.threads() == 1
    r = CliRunner().invoke(app, [*args, "--threads", "0"])
    assert r.exit_code != 0


def test_every_embedding_command_has_threads():
    import typer.main

    group = typer.main.get_command(app)
    names = {"embed": [], "classify": [], "search": [], "serve": [], "index": ["build", "add"],
             "eval": ["zeroshot", "retrieval", "linear-probe", "compositional"]}
    for name, subs in names.items():
        command = group.commands[name]  # type: ignore[attr-defined]
        for c in [command.commands[s] for s in subs] if subs else [command]:  # type: ignore[attr-defined]
            assert "--threads" in {o for p in c.params for o in p.opts}, (name, c.name)


def test_grouped_text_rows_equal_one_at_a_time(tiny_encoder):
    """Rows of many lengths, more than one group: each row's features are what the tower gives it alone."""
    from clipworks.model.towers.base import GROUP

    tower = tiny_encoder.model.text
    rng = np.random.default_rng(0)
    texts = [" ".join(["word"] * int(n)) for n in rng.integers(1, 12, size=3 * GROUP + 5)]
    tokens = tiny_encoder.tokenizer(texts, context_length=tiny_encoder.model.context_length)
    with torch.inference_mode():
        grouped = tower.encode_grouped(tokens)
        alone = torch.cat([tower(tower.trim(tokens[i : i + 1])) for i in range(len(texts))])
        full = tower(tokens)
    torch.testing.assert_close(grouped, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(grouped, full, atol=1e-5, rtol=0)
    assert tower.lengths(tokens).tolist() == [len(t.split()) + 2 for t in texts]


def test_resnet_convolutions_run_channels_last():
    import clipworks
    from clipworks.factory import model_config

    torch.manual_seed(0)
    model = clipworks.Clip(model_config("tiny-rn")).eval()
    seen = []
    model.visual.conv1.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.randn(2, 3, model.image_size, model.image_size)
    with torch.inference_mode():
        out = model.encode_image(x)
        # the same numbers as a plain NCHW pass through the same layers, up to float reordering
        v = model.visual
        y = torch.relu(v.bn1(v.conv1(x.contiguous())))
        y = torch.relu(v.bn2(v.conv2(y)))
        y = v.avgpool(torch.relu(v.bn3(v.conv3(y))))
        ref = v.attnpool(v.layer4(v.layer3(v.layer2(v.layer1(y)))))
    assert seen[0] is True
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_threads_recorded_before_torch_is_loaded_reach_it_at_model_load(tiny_checkpoint, restore_threads,
                                                                         monkeypatch):
    """The torch-free runtime shares this setting: with torch not yet imported, set_threads only records it; the
    torch backend applies it when it loads a model."""
    import sys

    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    with monkeypatch.context() as m:
        m.delitem(sys.modules, "torch")
        cpu.set_threads(1)
    assert calls == [] and cpu.threads() == 1
    Encoder.load(str(tiny_checkpoint))
    assert calls == [1] and torch.get_num_threads() == 1


def test_convnext_trunk_runs_channels_last_and_other_trunks_as_given():
    pytest.importorskip("timm")
    import clipworks
    from clipworks.factory import model_config

    seen = {}
    for name in ("convnext_tiny", "MobileCLIP-S1"):
        tower = clipworks.Clip(model_config(name)).visual.eval()
        first = next(m for m in tower.trunk.modules() if isinstance(m, torch.nn.Conv2d))
        first.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(
            name, args[0].is_contiguous(memory_format=torch.channels_last)))
        size = model_config(name).vision_cfg.image_size
        with torch.inference_mode():
            tower(torch.randn(1, 3, size, size))
    assert seen == {"convnext_tiny": True, "MobileCLIP-S1": False}
