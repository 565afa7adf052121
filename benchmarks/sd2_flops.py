"""FLOPs of the SD2-base UNet (config written in ``bench_gpu_sd2.SD2_BASE_UNET``, no hub) at 4x64x64 latents.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (shapes only: no weights, no
compute), attention included: the counter sees the attention matmuls (``bmm`` / SDPA) as well as the
convolutions and linear layers. One forward of one latent row with 77-token, 1024-dim text states; the
backward is counted by the same counter (grad w.r.t. inputs and weights), so forward + backward is measured,
not assumed to be 3x. Used by ``docs/scaling.md``.

    python benchmarks/sd2_flops.py      # writes benchmarks/results/sd2_flops.json
"""

from __future__ import annotations

import json
from collections import defaultdict

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_gpu_sd2 import SD2_BASE_UNET
from common import RESULTS  # noqa: E402  (puts the repo root on sys.path)

ATTENTION_OPS = ("bmm", "baddbmm", "_scaled_dot_product")


def count(rows: int = 1, tokens: int = 77) -> dict:
    """FLOPs of one forward and of one forward + backward on ``rows`` latents, split by operator family."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD2_BASE_UNET)
        x = torch.randn(rows, 4, 64, 64)
        emb = torch.randn(rows, tokens, SD2_BASE_UNET["cross_attention_dim"])
        t = torch.full((rows,), 500)
    params = sum(p.numel() for p in unet.parameters())
    out = {"params": params, "rows": rows, "latent": [4, 64, 64], "text_tokens": tokens}
    for phase in ("forward", "forward_backward"):
        counter = FlopCounterMode(display=False)
        with counter:
            y = unet(x, t, encoder_hidden_states=emb).sample
            if phase == "forward_backward":
                y.sum().backward()
        by_op: dict[str, int] = defaultdict(int)
        for op, n in counter.get_flop_counts()["Global"].items():
            by_op[str(op).removeprefix("aten.").split(".")[0]] += n  # aten.bmm.default -> bmm
        total = counter.get_total_flops()
        attention = sum(n for op, n in by_op.items() if op.startswith(ATTENTION_OPS))
        out[phase] = {"flops": total, "attention_matmul_flops": attention, "attention_share": attention / total,
                      "by_op": dict(by_op)}
    out["backward_over_forward"] = out["forward_backward"]["flops"] / out["forward"]["flops"] - 1
    return out


def main() -> None:
    result = count()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sd2_flops.json").write_text(json.dumps(result, indent=2) + "\n")
    fwd, fb = result["forward"], result["forward_backward"]
    print(f"SD2-base UNet: {result['params'] / 1e6:.1f}M params; forward {fwd['flops'] / 1e12:.3f} TFLOP per latent "
          f"(attention matmuls {100 * fwd['attention_share']:.1f}%); forward+backward {fb['flops'] / 1e12:.3f} TFLOP "
          f"(backward = {result['backward_over_forward']:.2f}x forward)")


if __name__ == "__main__":
    main()
