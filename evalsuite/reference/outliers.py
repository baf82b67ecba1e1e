"""A copy of the embedded model with activation outlier channels, as large LLMs have them (Dettmers et al.,
2022), made by a function-preserving rescaling: in every decoder layer, a few channels of the normalised
hidden state are multiplied by `scale` (in the RMSNorm weights) and the matching input columns of the
linear layers that read them are divided by it. The float model computes the same function (up to
rounding); its activations now carry outliers that per-token INT8 quantization handles badly and that
SmoothQuant and AWQ exist to handle.

    python -m evalsuite.reference.outliers --out /tmp/tiny-outliers          # then model.path: /tmp/tiny-outliers
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from evalsuite.models import EMBEDDED, PLAIN_MODULES

DEFAULT_CHANNELS = (3, 77, 150, 201)


@torch.no_grad()
def add_outlier_channels(model: torch.nn.Module, scale: float, channels=DEFAULT_CHANNELS) -> None:
    idx = torch.tensor(channels)
    for layer in model.get_decoder().layers:
        for norm, consumers in (
            (layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
            (layer.post_attention_layernorm, [layer.mlp.gate_proj, layer.mlp.up_proj]),
        ):
            norm.weight[idx] *= scale
            for linear in consumers:
                linear.weight[:, idx] /= scale


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=32.0, help="how much larger the outlier channels are")
    args = parser.parse_args(argv)
    source = EMBEDDED["embedded:tiny"]
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **PLAIN_MODULES)
    add_outlier_channels(model, args.scale)
    model.save_pretrained(args.out, safe_serialization=True)
    for f in source.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, args.out / f.name)
    print(f"wrote {args.out}: channels {list(DEFAULT_CHANNELS)} scaled x{args.scale:g} in every layer's norms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
