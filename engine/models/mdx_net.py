"""The MDX-Net network (KUIELab's TFC-TDF U-Net) in PyTorch, to write random-weight
ONNX files of the real architecture (`engine.models.testmodels`, benches). The product
never runs it: a released MDX-Net model is an ONNX file run by onnxruntime
(`engine.models.mdx`).

``TFCTDFNet(...)(spec (batch, 4, dim_f, dim_t)) -> (batch, 4, dim_f, dim_t)``: a 1x1
conv to `growth` channels; `blocks // 2` encoder levels (a TFC-TDF block, then a 2x2
stride-2 conv adding `growth` channels and halving both axes); a TFC-TDF bottleneck; as
many decoder levels (a 2x2 stride-2 transposed conv, multiplied by the encoder's skip, a
TFC-TDF block); a 1x1 conv back to 4 channels. A TFC-TDF block keeps its channel count:
`layers` densely connected k x k conv + BatchNorm + ReLU layers (time-frequency
convolutions), then a bottlenecked per-frame linear map over frequency
(``f -> f // bn -> f``) added back.
"""

from __future__ import annotations

import torch
from torch import nn

#: Released-size hyper-parameters (KUIELab's MDX-Net / UVR's fine-tunes: 11 blocks of 3
#: layers, kernel 3, TDF bottleneck 8; growth 32 gives 57 MiB of float32 weights at
#: dim_f 3072, near UVR's ~63 MB files: an approximation, not the exact released graph)
#: and a tiny stand-in with the same code paths.
SIZES: dict[str, dict[str, int]] = {
    "full": {"blocks": 11, "layers": 3, "growth": 32, "kernel": 3, "bn": 8},
    "tiny": {"blocks": 3, "layers": 1, "growth": 4, "kernel": 3, "bn": 2},
}


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1,
                  transposed: bool = False) -> nn.Sequential:
    conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    pad = 0 if stride > 1 else kernel // 2
    return nn.Sequential(conv_cls(cin, cout, kernel, stride, pad, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class TFCTDF(nn.Module):
    """(batch, c, f, t) -> (batch, c, f, t): dense TFC layers (each c channels, fed all
    earlier outputs), plus TDF."""

    def __init__(self, channels: int, layers: int, kernel: int, bins: int, bn: int) -> None:
        super().__init__()
        self.tfc = nn.ModuleList(
            _conv_bn_relu(channels * (i + 1), channels, kernel) for i in range(layers))
        hidden = max(1, bins // bn)
        self.tdf = nn.Sequential(nn.Linear(bins, hidden, bias=False), nn.BatchNorm2d(channels),
                                 nn.ReLU(), nn.Linear(hidden, bins, bias=False),
                                 nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.tfc):
            y = layer(x)
            x = y if i == len(self.tfc) - 1 else torch.cat([y, x], 1)
        # linear over frequency: (b, c, f, t) -> (b, c, t, f)
        return x + self.tdf(x.transpose(-1, -2)).transpose(-1, -2)


class TFCTDFNet(nn.Module):
    """The U-Net; `dim_f` and `dim_t` must be divisible by ``2 ** (blocks // 2)``."""

    def __init__(self, dim_f: int, dim_t: int, *, blocks: int, layers: int, growth: int,
                 kernel: int, bn: int) -> None:
        super().__init__()
        levels = blocks // 2
        if dim_f % 2**levels or dim_t % 2**levels:
            raise ValueError(f"dim_f and dim_t must be multiples of {2 ** levels}")
        self.first = _conv_bn_relu(4, growth, 1)
        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        c, f = growth, dim_f
        for _ in range(levels):
            self.encoder.append(TFCTDF(c, layers, kernel, f, bn))
            self.down.append(_conv_bn_relu(c, c + growth, 2, stride=2))
            c, f = c + growth, f // 2
        self.bottleneck = TFCTDF(c, layers, kernel, f, bn)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for _ in range(levels):
            self.up.append(_conv_bn_relu(c, c - growth, 2, stride=2, transposed=True))
            c, f = c - growth, f * 2
            self.decoder.append(TFCTDF(c, layers, kernel, f, bn))
        self.last = nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        skips = []
        for block, down in zip(self.encoder, self.down, strict=True):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(up(x) * skips.pop())
        return self.last(x)


def randomize(net: TFCTDFNet, seed: int, gain: float = 100.0) -> TFCTDFNet:
    """Random BatchNorm statistics (an untrained net's are 0 and 1) and the last conv
    scaled by `gain`, so the spectrogram out is about as loud as the one in; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.last.weight.mul_(gain)
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                mean, var = module.running_mean, module.running_var
                assert mean is not None and var is not None  # track_running_stats is on
                mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return net.eval()


def export_onnx(net: TFCTDFNet, dim_f: int, dim_t: int, path: str) -> None:
    """Write `net` as ONNX (input "input" [batch, 4, dim_f, dim_t], batch dynamic), the
    layout of UVR's files."""
    example = torch.zeros(1, 4, dim_f, dim_t)
    torch.onnx.export(net, (example,), path, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      opset_version=17, dynamo=False)
