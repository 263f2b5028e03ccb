"""CUDA paths: fp32 GPU vs CPU embeddings, bf16 autocast and bf16 weights, images/s on the GPU.
Not part of the test suite (CI has no GPU).   python bench/cuda_check.py
"""

from __future__ import annotations

import time

import torch

import clipworks


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    torch.manual_seed(0)
    for name in ["ViT-B-32", "RN50"]:
        cpu = clipworks.create_model(name)
        gpu = clipworks.create_model(name).cuda()
        gpu.load_state_dict(cpu.state_dict())
        x = torch.randn(8, 3, cpu.image_size, cpu.image_size)
        t = clipworks.tokenize(["a photo of a cat"] * 8)
        with torch.no_grad():
            ref_i, ref_t = cpu.encode_image(x, normalize=True), cpu.encode_text(t, normalize=True)
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            gi, gt = gpu.encode_image(x.cuda(), normalize=True).cpu(), gpu.encode_text(t.cuda(), normalize=True).cpu()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                ai, at = gpu.encode_image(x.cuda(), normalize=True).float().cpu(), gpu.encode_text(t.cuda(), normalize=True).float().cpu()
            cos_i = (ai * ref_i).sum(-1).min().item()
            cos_t = (at * ref_t).sum(-1).min().item()
            print(f"{name}: fp32 GPU vs CPU max diff image {(gi - ref_i).abs().max():.2e} text {(gt - ref_t).abs().max():.2e}; "
                  f"bf16 autocast min cosine image {cos_i:.5f} text {cos_t:.5f}")
            b = gpu.to(torch.bfloat16)
            xb = torch.randn(256, 3, cpu.image_size, cpu.image_size, device="cuda", dtype=torch.bfloat16)
            for _ in range(3):
                b.encode_image(xb)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(10):
                b.encode_image(xb)
            torch.cuda.synchronize()
            print(f"{name}: bf16 weights, batch 256: {2560 / (time.perf_counter() - t0):.0f} images/s")


if __name__ == "__main__":
    main()
