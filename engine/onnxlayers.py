"""ONNX Runtime forwards by layer: chosen sub-modules of a network exported to ONNX at one
fixed window shape and run by onnxruntime's CPU provider (graph optimisation ALL,
intra-op threads = torch's, no memory arena), while the rest of the forward (demucs: STFT, iSTFT and the
glue between layers) stays in torch.

    fast, payload = export_layers(model, {"encoder": model.encoder, ...}, probe, None)

`export_layers` runs the model once on `probe` with every chosen layer recording its
arguments and exporting itself (TorchScript exporter, opset 17); the non-tensor
arguments a layer is called with (demucs' decoder `length`) are constants of its graph,
so one export serves one input shape only. `payload` (a zip of one ``.onnx`` per layer)
is what the artifact cache (`engine.artifacts`) keeps; given back as `payload`, the
sessions are built from it without exporting. fp32 only: onnxruntime's CPU provider has
no general bf16 kernels. The caller (`engine.acceleration.FastForward`) checks the result
against eager on the probe window before serving it.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: the ONNX opset the layers are exported with
OPSET = 17


def unavailable_reason() -> str | None:
    """Why layers cannot be exported and run here (None when they can): onnxruntime runs
    them, the `onnx` package is torch's ONNX writer."""
    for name in ("onnxruntime", "onnx"):
        try:
            __import__(name)
        except ImportError:
            return f"{name} is not installed (pip install 'stembridge[onnx]')"
    return None


def version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _session(data: bytes) -> Any:
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # onnxruntime's CPU arena (one per session) grew the process to 6.5 GB after two
    # released-size htdemucs windows; without it 1.8 GB, no slower (issue 15, round 2)
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _exportable() -> Any:
    """nn.MultiheadAttention's inference fast path (`_native_multi_head_attention`) has
    no ONNX export: switch it off while exporting."""
    import torch

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


class _Layer:
    """One layer, called like the module it replaces: its tensor arguments go to its ONNX
    session (float32 numpy), non-tensor ones were fixed at export. Until it has a session
    it runs the module eagerly and, with `exports` set, exports itself on that call."""

    def __init__(self, module: Any, data: bytes | None) -> None:
        self.module = module
        self.empty = getattr(module, "empty", False)  # demucs tests `layer.empty`
        self.data = data
        self.session = None if data is None else _session(data)
        self.exports = data is None

    def __bool__(self) -> bool:  # demucs tests `if self.crosstransformer`
        return True

    def __call__(self, *args: Any) -> Any:
        import torch

        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if self.session is None:
            if self.exports:
                self.exports = False
                self.data = _export(self.module, args, tensors)
                self.session = _session(self.data)
            return self.module(*args)
        names = [i.name for i in self.session.get_inputs()]
        feeds = {n: t.detach().to("cpu", torch.float32).contiguous().numpy()
                 for n, t in zip(names, tensors, strict=True)}
        device = tensors[0].device
        outs = [torch.from_numpy(o).to(device) for o in self.session.run(None, feeds)]
        return tuple(outs) if len(outs) > 1 else outs[0]


def _export(module: Any, args: tuple[Any, ...], tensors: list[torch.Tensor]) -> bytes:
    import torch

    class Bound(torch.nn.Module):
        """`module` with its non-tensor arguments fixed: forward(*tensors)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *given: torch.Tensor) -> Any:
            it = iter(given)
            return self.inner(*(next(it) if isinstance(a, torch.Tensor) else a
                                for a in args))

    buf = io.BytesIO()
    with _exportable(), torch.no_grad():
        torch.onnx.export(Bound().eval(), tuple(tensors), buf, dynamo=False,  # type: ignore[arg-type]
                          opset_version=OPSET)
    return buf.getvalue()


def export_layers(model: Any, layers: dict[str, Any], probe: torch.Tensor,
                  payload: bytes | None) -> tuple[Any, bytes]:
    """(a callable running `model`'s forward with `layers` through onnxruntime, the
    payload to cache). `layers`: attribute path -> sub-module, e.g. ``"encoder.0"``
    (a ModuleList item) or ``"crosstransformer"``. `probe`: one input window of the
    shape to serve, (batch, channels, samples) float32. With `payload` the layers come
    from it (ValueError if it lacks one); else they are exported on a run of `probe`."""
    import copy

    import torch

    stored: dict[str, bytes] = {}
    if payload is not None:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            stored = {n.removesuffix(".onnx"): z.read(n) for n in z.namelist()}
        missing = sorted(set(layers) - set(stored))
        if missing:
            raise ValueError(f"cached ONNX layers lack {missing}")
    wrapped = {path: _Layer(m, stored.get(path)) for path, m in layers.items()}
    fast = copy.copy(model)
    fast._modules = dict(model._modules)
    lists: dict[str, list[Any]] = {}
    for path, layer in wrapped.items():
        name, _, index = path.partition(".")
        if index:
            lists.setdefault(name, list(model._modules[name]))[int(index)] = layer
        else:
            fast.__dict__[name] = layer  # shadows the module entry below
            del fast._modules[name]
    for name, items in lists.items():
        del fast._modules[name]
        fast.__dict__[name] = items
    if payload is None:
        with torch.no_grad():  # not inference mode: the exporter traces these tensors
            fast(probe)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for path, layer in wrapped.items():
                if layer.data is None:
                    raise ValueError(f"layer {path} was not called on the probe window")
                z.writestr(path + ".onnx", layer.data)
        payload = buf.getvalue()
    return fast, payload
