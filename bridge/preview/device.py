"""pyo and the audio devices: pyo imported on first use, the check that the chosen back
end can play here (before any job is sent), and the booted pyo server.

Nothing here runs at import time; `pyo_module` is the one place the preview imports pyo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

NO_DEVICE_HELP = (
    "Use JACK instead (`--audio jack`, with a JACK server running, e.g. `jackd -d alsa` for "
    "a sound card or `jackd -d dummy` for none), or render offline without a sound card: "
    "`stembridge preview FILE --render out.wav --dur 30`.")

#: The audio back ends `boot_server` knows (``manual``: no device, blocks on demand).
BACK_ENDS = ("portaudio", "jack", "manual")


def pyo_module() -> Any:
    """pyo, imported on first use (quietly: without wxPython it prints a banner). Raises
    `DeviceError` saying how to install it when it is missing."""
    os.environ.setdefault("PYO_GUI_WX", "0")
    try:
        import pyo
    except ImportError as exc:
        from engine.errors import DeviceError

        raise DeviceError("The preview plays through pyo, which is not installed: "
                          "`pip install 'stembridge[preview]'` (or `pip install pyo`).") from exc
    return pyo


_COUNT_SCRIPT = ("import os; os.environ.setdefault('PYO_GUI_WX', '0'); import pyo; "
                 "print('stembridge-output-devices', len(pyo.pa_get_output_devices()[0]))")


def output_device_count(timeout: float = 30.0) -> int:
    """Number of audio output devices PortAudio sees, counted in a child process: pyo's
    PortAudio start crashes the whole process (SIGSEGV) when there is no device, so the
    preview asks first. A child that crashes or hangs counts as no device."""
    try:
        res = subprocess.run([sys.executable, "-c", _COUNT_SCRIPT], capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 0
    for line in res.stdout.splitlines():
        if line.startswith("stembridge-output-devices "):
            return int(line.split()[1])
    return 0


def check_audio_device(audio: str) -> None:
    """Raise `DeviceError` (exit status 9) naming the alternatives when `audio` cannot
    play here. ``portaudio``: at least one output device; ``jack``: checked when the pyo
    server boots (a missing JACK server fails cleanly there); ``manual``: always fine."""
    from engine.errors import DeviceError, InvalidArgumentError

    if audio not in BACK_ENDS:
        raise InvalidArgumentError(f"Unknown audio back end {audio!r}: use portaudio or jack.")
    pyo_module()  # not installed: say so, rather than "no device"
    if audio == "portaudio" and output_device_count() == 0:
        raise DeviceError("No audio output device found (PortAudio sees none), so the "
                          "preview cannot play here. " + NO_DEVICE_HELP)


def boot_server(audio: str, samplerate: int, block: int = 512) -> Any:
    """A booted pyo `Server` (stereo out, no input) at `samplerate` Hz, `block` frames per
    buffer. `audio`: ``portaudio``, ``jack`` or ``manual`` (no device: the caller calls
    ``server.process()`` per block). Raises `DeviceError` when it cannot boot or runs at
    another rate than the song's (the preview does not resample)."""
    from engine.errors import DeviceError

    pyo = pyo_module()
    kwargs: dict[str, Any] = {"jackname": "stembridge-preview"} if audio == "jack" else {}
    server = pyo.Server(sr=samplerate, nchnls=2, buffersize=block, duplex=0, audio=audio,
                        **kwargs)
    server.setVerbosity(1)  # errors only
    server.boot()
    if not server.getIsBooted():
        if audio == "jack":
            raise DeviceError("Cannot start audio: no JACK server answers. Start one "
                              "(`jackd -d alsa` for a sound card, `jackd -d dummy` for none) "
                              "or render offline without a sound card: `stembridge preview "
                              "FILE --render out.wav --dur 30`.")
        raise DeviceError(f"Cannot start audio: the {audio} back end failed. " + NO_DEVICE_HELP)
    rate = int(round(server.getSamplingRate()))
    if rate != samplerate:
        server.shutdown()
        raise DeviceError(f"The audio device runs at {rate} Hz but the song is at "
                          f"{samplerate} Hz and the preview does not resample: run "
                          f"{'JACK' if audio == 'jack' else 'the device'} at {samplerate} "
                          "Hz, or render offline with --render.")
    return server
