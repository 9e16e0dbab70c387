"""Run in a separate process that never imports zoo: plain timm loading, logits saved for comparison."""

import sys

import timm
import torch
from safetensors.torch import save_file

if __name__ == "__main__":
    source, out = sys.argv[1], sys.argv[2]
    model = timm.create_model(source, pretrained=True).eval()
    assert "zoo" not in sys.modules, "this process must not import zoo"
    torch.manual_seed(0)
    x = torch.randn(2, *model.pretrained_cfg["input_size"])
    with torch.inference_mode():
        save_file({"x": x, "logits": model(x)}, out)
