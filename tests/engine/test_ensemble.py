"""Fixed ensembles (engine/models/ensemble.py) against numpy on the members' own outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
import torch  # noqa: E402

from engine.chunking import iter_separate, separate  # noqa: E402
from engine.errors import InvalidArgumentError, StembridgeError  # noqa: E402
from engine.models import catalog, ensemble, registry, testmodels  # noqa: E402
from protocol.stems import FOUR, TWO  # noqa: E402

CPU = torch.device("cpu")
N = 21000  # samples: > one tiny MDX window (15360), < one demucs window


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ens-models")
    testmodels.make_test_model("htdemucs", root, size="tiny")
    testmodels.make_test_mdx("mdx-voc-ft", root, seed=1)
    # another window layout (dim_t 32: windows twice as long) and denoise
    testmodels.make_test_mdx("mdx-inst-hq3", root, seed=2,
                             settings={"denoise": True, "dim_t": 32})
    return root


@pytest.fixture(scope="module")
def mix() -> torch.Tensor:
    rng = np.random.default_rng(7)
    t = np.arange(N) / 44100
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal((2, N))
    return torch.from_numpy(x.astype(np.float32))


def _member_out(model: Any, mix: torch.Tensor) -> np.ndarray:
    """A member's whole-file output, as the engine runs it (demucs: normalised input)."""
    if model.normalize_input:
        mono = mix.mean(0)
        mean, std = float(mono.mean()), float(mono.std())
        return (separate(model, (mix - mean) / std) * std + mean).numpy()
    return separate(model, mix).numpy()


def _two(sources: tuple[str, ...], out: np.ndarray) -> np.ndarray:
    v = sources.index("vocals")
    return np.stack([out[v], out.sum(0) - out[v]])


def _members(root: Path, mix: torch.Tensor, names: tuple[str, ...]) -> list[np.ndarray]:
    """Each member's whole-file output as (vocals, instrumental)."""
    outs = []
    for name in names:
        m = registry.load(name, CPU, root)
        outs.append(_two(m.spec.sources, _member_out(m, mix)))
    return outs


def _stft_ref(x: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Frames of `x` (channels, total) on the module's grid: complex (ch, K, bins),
    the window and the first frame's start."""
    n, hop = ensemble.N_FFT, ensemble.HOP
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    starts = [k * hop - n // 2 for k in range(-(n // hop), total // hop + n // hop + 1)]
    starts = [s for s in starts if s + n > 0 and s < total]
    pad = np.pad(x.astype(np.float64), ((0, 0), (n, n + total)))
    frames = np.stack([pad[:, s + n:s + 2 * n] for s in starts], 1) * win
    return np.fft.rfft(frames, axis=-1), win, starts[0]


def _istft_ref(spec: np.ndarray, win: np.ndarray, s0: int, total: int) -> np.ndarray:
    n, hop = ensemble.N_FFT, ensemble.HOP
    frames = np.fft.irfft(spec, n=n, axis=-1) * win
    out = np.zeros((spec.shape[0], total + 3 * n))
    norm = np.zeros(total + 3 * n)
    for k in range(frames.shape[1]):
        s = s0 + k * hop + n
        out[:, s:s + n] += frames[:, k]
        norm[s:s + n] += win**2
    return out[:, n:n + total] / norm[n:n + total]


def _numpy_ensemble(algo: str, xs: list[np.ndarray], w: list[float]) -> np.ndarray:
    arr = np.stack(xs)  # (members, stems, ch, n)
    wa = np.asarray(w)
    if algo == "avg_wave":
        return np.tensordot(wa, arr, 1) / wa.sum()
    if algo == "median_wave":
        return np.median(arr, axis=0)
    total = arr.shape[-1]
    res = []
    for j in range(arr.shape[1]):
        specs = []
        for m in range(arr.shape[0]):
            spec, win, s0 = _stft_ref(arr[m, j], total)
            specs.append(spec)
        sp = np.stack(specs)
        if algo == "avg_fft":
            comb = np.tensordot(wa, sp, 1) / wa.sum()
        else:
            mag = np.abs(sp)
            pick = mag.argmin(0) if algo == "min_spec" else mag.argmax(0)
            comb = np.take_along_axis(sp, pick[None], 0)[0]
        res.append(_istft_ref(comb, win, s0, total))
    return np.stack(res)


MDX_PAIR = ("mdx-voc-ft", "mdx-inst-hq3")  # cheap: every algorithm, 3 members, weights
CROSS = ("htdemucs", "mdx-voc-ft")  # across families: a 4-stem and a 2-stem member


@pytest.mark.parametrize("algo", ensemble.ALGORITHMS)
def test_algorithm_equals_numpy_on_member_outputs(root: Path, mix: torch.Tensor,
                                                  algo: str) -> None:
    names = (*MDX_PAIR, "mdx-voc-ft")
    members = _members(root, mix, names)
    ens = ensemble.load("+".join(names) + f"@{algo}", CPU, root)
    assert ens.spec.sources == TWO
    got = separate(ens, mix).numpy()
    assert np.abs(got - _numpy_ensemble(algo, members, [1.0] * 3)).max() < 1e-4
    if algo in ("avg_wave", "avg_fft"):  # per-stem weights
        entry = ensemble.EnsembleEntry(names, algo, (("vocals", (3.0, 1.0, 0.5)),))
        wens = ensemble.EnsembleModel(ens.spec, ens.members, entry)
        got = separate(wens, mix).numpy()
        want = np.stack([_numpy_ensemble(algo, [m[:1] for m in members], [3.0, 1.0, 0.5])[0],
                         _numpy_ensemble(algo, [m[1:] for m in members], [1.0] * 3)[0]])
        assert np.abs(got - want).max() < 1e-4


def test_ensemble_of_a_model_with_itself_is_the_model(root: Path, mix: torch.Tensor) -> None:
    model = registry.load("mdx-inst-hq3", CPU, root)
    alone = _member_out(model, mix)
    for algo in ensemble.ALGORITHMS:
        ens = registry.load(f"mdx-inst-hq3+mdx-inst-hq3@{algo}", CPU, root)
        assert ens.spec.sources == model.spec.sources
        got = separate(ens, mix).numpy()
        assert np.abs(got - alone).max() < 1e-5, algo


@pytest.mark.parametrize(("names", "algo"), [(CROSS, "max_spec"), (MDX_PAIR, "median_wave")])
def test_streaming_cursor_and_resume_equal_whole_file(root: Path, mix: torch.Tensor,
                                                      names: tuple[str, ...], algo: str) -> None:
    """Across families (htdemucs: 4 stems, instrumental = drums + bass + other; MDX: 2
    stems, other windows): the whole file against numpy, then streamed, from the cursor
    and resumed against the whole file."""
    ens = registry.load("+".join(names) + f"@{algo}", CPU, root)
    margin = ensemble.MARGIN if algo in ensemble.SPECTRAL else 0
    whole = separate(ens, mix)
    want = _numpy_ensemble(algo, _members(root, mix, names), [1.0] * len(names))
    assert np.abs(whole.numpy() - want).max() < 1e-4
    regions = list(iter_separate(ens, mix, start_at=16000, batch_size=2))
    seen = np.zeros(N, int)
    for r in regions:
        seen[r.start:r.end] += 1
        assert torch.allclose(r.audio, whole[..., r.start:r.end], atol=1e-6)
    assert (seen == 1).all()
    # the members begin with their window under the cursor: the first region holds
    # sample 16000 (for a spectral ensemble: lies within its margin)
    assert regions[0].start <= 16000 + margin and regions[0].end > 16000
    done = [(0, 7000)]
    rest = list(iter_separate(ens, mix, already_final=done))
    seen = np.zeros(N, int)
    for r in rest:
        seen[r.start:r.end] += 1
        assert torch.allclose(r.audio, whole[..., r.start:r.end], atol=1e-6)
    assert (seen[:7000] == 0).all() and (seen[7000:] == 1).all()


def test_stems_are_normalised_and_mapped() -> None:
    assert [ensemble.normalise_stem(s) for s in ("Vocals", "vocal", "no_vocals", "Drums")] \
        == ["vocals", "vocals", "instrumental", "drums"]
    six = catalog.get_spec("htdemucs_6s").sources
    assert ensemble.ensemble_stems([six, catalog.get_spec("htdemucs").sources]) == FOUR
    assert ensemble.stem_map(six, FOUR)[FOUR.index("other")] == [
        six.index("other"), six.index("guitar"), six.index("piano")]
    spec = catalog.get_spec("htdemucs_6s+htdemucs+mdx-voc-ft")
    assert spec.sources == TWO
    with pytest.raises(StembridgeError, match="share no stems"):
        ensemble.ensemble_stems([("drums", "bass"), ("vocals", "instrumental")])


def test_cache_identity_covers_every_member(monkeypatch: pytest.MonkeyPatch) -> None:
    base = catalog.get_spec("htdemucs+mdx-voc-ft").version
    others = {catalog.get_spec(n).version for n in (
        "htdemucs+kim-vocal-2", "mdx-voc-ft+htdemucs", "htdemucs+mdx-voc-ft@median_wave",
        "htdemucs+mdx-voc-ft+mdx-voc-ft")}
    assert base not in others and len(others) == 4
    changed = dataclasses.replace(catalog.SPECS["mdx-voc-ft"], version="other-weights")
    monkeypatch.setitem(catalog.SPECS, "mdx-voc-ft", changed)
    assert catalog.get_spec("htdemucs+mdx-voc-ft").version != base
    named = catalog.get_spec("ensemble-vocals")
    assert named.family == "ensemble" and named.sources == TWO


def test_bad_ensembles_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgumentError, match="algorithm"):
        catalog.get_spec("htdemucs+mdx-voc-ft@loudest")
    with pytest.raises(StembridgeError, match="Unknown model"):
        catalog.get_spec("htdemucs+nosuchmodel")
    slow = dataclasses.replace(catalog.SPECS["mdx-voc-ft"], samplerate=48000)
    monkeypatch.setitem(catalog.SPECS, "mdx-voc-ft", slow)
    with pytest.raises(InvalidArgumentError, match="sample rates"):
        catalog.get_spec("htdemucs+mdx-voc-ft")


def test_engine_job_streams_caches_and_names_the_ensemble(root: Path, tmp_path: Path) -> None:
    import soundfile as sf

    from engine.config import EngineConfig
    from engine.separator import Engine
    from protocol.messages import SplitRequest

    rng = np.random.default_rng(3)
    mix = (0.2 * rng.standard_normal((2, 30000))).astype(np.float32)
    src = tmp_path / "song.wav"
    sf.write(src, mix.T, 44100, subtype="FLOAT")
    name = "mdx-voc-ft+mdx-inst-hq3@max_spec"
    engine = Engine(EngineConfig(device="cpu", precision="fp32", models_dir=root,
                                 cache_dir=tmp_path / "cache"))
    job, regions = engine.split(SplitRequest(str(src), model=name, start_at=0.5))
    assert job.plan.names == TWO and not job.cache_hit
    got = np.zeros((2, 2, 30000), np.float32)
    for r in regions:
        got[:, :, r.start:r.end] = np.stack([r.stems[s] for s in TWO])
    want = separate(engine.model(name), torch.from_numpy(mix)).numpy()
    assert np.abs(got - want).max() < 1e-5
    assert sum(r.end - r.start for r in regions) == 30000
    job2, _ = engine.split(SplitRequest(str(src), model=name, start_at=0.5))
    assert job2.cache_hit and job2.cache_key() == job.cache_key()
    job3 = engine.prepare(SplitRequest(str(src), model="mdx-voc-ft+mdx-inst-hq3"))
    assert job3.cache_key() != job.cache_key()
    job3.close()
