"""BS-RoFormer and Mel-Band RoFormer networks, our implementation, with the parameter
names of the community training code's checkpoints (so its ``.ckpt`` files load with
strict key matching).

Both map ``audio (batch, channels, samples)`` float32 to
``(batch, stems, channels, samples')`` (``samples' = hop * (samples // hop)``, or
`samples` when asked to keep the length):

    STFT (n_fft, hop, win, periodic Hann, centred) -> (batch, freq * channels, frames)
    complex, channels interleaved per bin
    -> band split: each band's (re, im) values, RMSNorm + Linear -> (b, frames, bands, dim)
    -> `depth` x [transformer over frames per band, transformer over bands per frame]
       (pre-norm attention with rotary positions and per-head sigmoid gates, GELU MLP)
    -> one mask estimator per stem: per band an MLP (tanh) + GLU -> complex mask values
    -> mask * STFT -> inverse STFT.

BS-RoFormer's bands are contiguous bin ranges (`freqs_per_bands`). Mel-Band RoFormer's
bands are the supports of a Slaney mel filter bank (`mel_bands`), which overlap: each
bin's mask is the mean over the bands that hold it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """``x / |x| * sqrt(dim) * gamma`` over the last axis."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return F.normalize(x.float(), dim=-1).to(x.dtype) * self.scale * self.gamma
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class Rotary(nn.Module):
    """Rotary position angles: ``freqs`` (dim_head / 2,) as stored in the checkpoints
    (``1 / 10000 ** (2i / dim_head)``); pairs of features are rotated."""

    def __init__(self, dim_head: int) -> None:
        super().__init__()
        inv = 1.0 / (10000 ** (torch.arange(0, dim_head, 2)[: dim_head // 2].float() / dim_head))
        self.freqs = nn.Parameter(inv, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., seq, dim_head) -> the same, rotated by position (angles in float32)."""
        pos = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)
        angles = torch.repeat_interleave(pos[:, None] * self.freqs.float()[None], 2, dim=-1)
        pairs = x.float().unflatten(-1, (-1, 2))
        half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return (x.float() * angles.cos() + half * angles.sin()).to(x.dtype)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention over (batch, seq, dim), gated per head."""

    def __init__(self, dim: int, heads: int, dim_head: int, gates: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gates = nn.Linear(dim, heads) if gates else None
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False))
        self.rotary_embed = Rotary(dim_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.rotary_embed(q), self.rotary_embed(k)
        out = F.scaled_dot_product_attention(q, k, v)
        if self.to_gates is not None:
            out = out * self.to_gates(x).transpose(1, 2).unsqueeze(-1).sigmoid()
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        # indices 0..5 as in the checkpoints: norm, linear, GELU, dropout, linear, dropout
        self.net = nn.Sequential(RMSNorm(dim), nn.Linear(dim, inner), nn.GELU(), nn.Identity(),
                                 nn.Linear(inner, dim), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """`depth` x (attention + GELU feed-forward, both residual), optionally normed."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, ff_mult: int = 4,
                 norm_output: bool = True, gates: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head, gates),
                           _FeedForward(dim, dim * ff_mult)])
            for _ in range(depth))
        self.norm = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            attn, ff = layer[0], layer[1]  # type: ignore[index]
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


def _mlp(dim_in: int, dim_out: int, hidden: int, hidden_layers: int) -> nn.Sequential:
    dims = [dim_in, *([hidden] * hidden_layers), dim_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class BandSplit(nn.Module):
    """(batch, frames, sum(widths)) -> (batch, frames, bands, dim)."""

    def __init__(self, dim: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.widths = list(widths)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(w), nn.Linear(w, dim)) for w in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.widths, dim=-1)
        return torch.stack([f(p) for f, p in zip(self.to_features, parts, strict=True)], -2)


class MaskEstimator(nn.Module):
    """(batch, frames, bands, dim) -> (batch, frames, sum(widths)). The community code's
    `mask_estimator_depth` counts the Linear layers in BS-RoFormer (``hidden_layers =
    depth - 1``) and the hidden layers in Mel-Band RoFormer (``hidden_layers = depth``)."""

    def __init__(self, dim: int, widths: Sequence[int], hidden_layers: int,
                 expansion: int) -> None:
        super().__init__()
        self.to_freqs = nn.ModuleList(
            nn.Sequential(_mlp(dim, 2 * w, dim * expansion, hidden_layers), nn.GLU(dim=-1))
            for w in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.unbind(dim=-2)
        return torch.cat([f(b) for f, b in zip(self.to_freqs, bands, strict=True)], dim=-1)


def mel_bands(samplerate: int, n_fft: int, num_bands: int) -> torch.Tensor:
    """(num_bands, n_fft // 2 + 1) bool: which bins each band holds, the support of a
    Slaney-style mel filter bank from 0 Hz to Nyquist (bin 0 in the first band, the last
    bin in the last): bin f is in band i when ``mel_f[i] < freq(f) < mel_f[i + 2]``."""
    import numpy as np

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        lin = f / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        lin = m * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log, lin)

    fft_f = np.linspace(0, samplerate / 2, 1 + n_fft // 2)
    lo, hi = hz_to_mel(np.array([0.0, samplerate / 2]))
    mel_f = mel_to_hz(np.linspace(lo, hi, num_bands + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    support = np.minimum(lower, upper) > 0
    support[0, 0] = True
    support[-1, -1] = True
    return torch.from_numpy(support)


class RoFormer(nn.Module):
    """BS-RoFormer (``bands`` = bin counts) or Mel-Band RoFormer (``bands`` = a bool
    (bands, bins) membership from `mel_bands`). Keyword arguments as the community
    configs' ``model:`` section."""

    def __init__(self, *, dim: int, depth: int, bands: Sequence[int] | torch.Tensor,
                 stereo: bool = True, num_stems: int = 1, time_transformer_depth: int = 2,
                 freq_transformer_depth: int = 2, dim_head: int = 64, heads: int = 8,
                 stft_n_fft: int = 2048, stft_hop_length: int = 512,
                 stft_win_length: int = 2048, stft_normalized: bool = False,
                 mask_estimator_depth: int = 2, mlp_expansion_factor: int = 4,
                 gates: bool = True, final_norm: bool = True,
                 transformer_norm: bool = False, keep_length: bool = False) -> None:
        super().__init__()
        self.channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.n_fft, self.hop, self.win = stft_n_fft, stft_hop_length, stft_win_length
        self.normalized = stft_normalized
        self.keep_length = keep_length
        bins = stft_n_fft // 2 + 1
        if isinstance(bands, torch.Tensor):  # mel: overlapping bands
            if bands.shape[1] != bins or not bands.any(0).all():
                raise ValueError("the mel bands must cover every STFT bin")
            idx = torch.arange(bins).expand(bands.shape[0], -1)[bands]
            if stereo:
                idx = (idx[:, None] * 2 + torch.arange(2)).flatten()
            self.register_buffer("freq_indices", idx, persistent=False)
            self.register_buffer("bands_per_bin", bands.sum(0).float(), persistent=False)
            counts = bands.sum(1).tolist()
        else:
            if sum(bands) != bins:
                raise ValueError(f"freqs_per_bands must sum to {bins} (n_fft {stft_n_fft})")
            self.freq_indices = None
            counts = list(bands)
        widths = [2 * c * self.channels for c in counts]
        self.layers = nn.ModuleList(
            nn.ModuleList([
                Transformer(dim, time_transformer_depth, heads, dim_head,
                            norm_output=transformer_norm, gates=gates),
                Transformer(dim, freq_transformer_depth, heads, dim_head,
                            norm_output=transformer_norm, gates=gates),
            ]) for _ in range(depth))
        self.final_norm = RMSNorm(dim) if final_norm else None
        self.band_split = BandSplit(dim, widths)
        hidden_layers = mask_estimator_depth - (1 if self.freq_indices is None else 0)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, widths, hidden_layers, mlp_expansion_factor)
            for _ in range(num_stems))

    def forward(self, audio: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(batch, channels, samples) -> (batch, stems, channels, samples'):
        ``samples' = hop * (samples // hop)`` as the community code gives, or `length`
        (the inverse STFT's tail kept), or `samples` when the config asks for it."""
        b, s, n = audio.shape
        window = torch.hann_window(self.win, device=audio.device)
        spec = torch.stft(audio.reshape(b * s, n).float(), self.n_fft, self.hop, self.win,
                          window, normalized=self.normalized, return_complex=True)
        spec = torch.view_as_real(spec)  # (b*s, f, t, 2)
        f, t = spec.shape[1], spec.shape[2]
        spec = spec.view(b, s, f, t, 2).transpose(1, 2).reshape(b, f * s, t, 2)
        x = spec if self.freq_indices is None else spec[:, self.freq_indices]
        x = x.permute(0, 2, 1, 3).reshape(b, t, -1)
        x = self.band_split(x)  # (b, t, bands, d)
        for layer in self.layers:
            time_tf, freq_tf = layer[0], layer[1]  # type: ignore[index]
            bands = x.shape[2]
            # contiguous: with one item in the batch, reshape keeps a transposed view, and
            # a linear layer on one runs as a batched product with its weight copied
            # once per row (BS-RoFormer, released size, bf16: 17.3 s of copies in a
            # 55.8 s window; issue 15)
            x = x.transpose(1, 2).reshape(b * bands, t, -1).contiguous()
            x = time_tf(x).view(b, bands, t, -1).transpose(1, 2).reshape(b * t, bands, -1)
            x = freq_tf(x.contiguous()).view(b, t, bands, -1)
        if self.final_norm is not None:
            x = self.final_norm(x)
        mask = torch.stack([m(x) for m in self.mask_estimators], dim=1)  # (b, n, t, f*2)
        mask = mask.view(b, self.num_stems, t, -1, 2).transpose(2, 3).float()
        mask_c = torch.view_as_complex(mask.contiguous())
        spec_c = torch.view_as_complex(spec.contiguous())[:, None]
        if self.freq_indices is not None:
            summed = torch.zeros(b, self.num_stems, f * s, t, dtype=mask_c.dtype,
                                 device=mask_c.device)
            summed.index_add_(2, self.freq_indices, mask_c)
            denom = self.bands_per_bin.repeat_interleave(s).clamp(min=1e-8)
            mask_c = summed / denom[:, None]
        out = (spec_c * mask_c).view(b * self.num_stems, f, s, t).transpose(1, 2)
        wave = torch.istft(out.reshape(-1, f, t), self.n_fft, self.hop, self.win, window,
                           normalized=self.normalized,
                           length=length or (n if self.keep_length else None))
        return wave.view(b, self.num_stems, s, -1)
