"""Real-time stem preview: hear a song as stems while the engine is still separating it.

    stembridge preview song.wav --stems 4 --start-at 60        # sound card (PortAudio)
    stembridge preview song.wav --audio jack                    # a running JACK server
    stembridge preview song.wav --render out.wav --dur 20 --automation cues.jsonl

The job goes to the warm server (`bridge.client`, started if needed, or the one that
``--host``/``--port`` name) with ``shm: true``; the preview maps the stems' shared-memory
blocks (`protocol.shm`, no copy of the stems) and plays their mix through pyo from
``--start-at``. The engine separates in playback order from there. Where the playhead
reaches audio whose stems are not final yet (the index block's final ranges), the preview
plays the original mixture, decoded with `engine.audio.load` at the source rate, and
crossfades into the stems once they are final, so there is never silence and never a
click. Controls arrive as OSC over UDP on 127.0.0.1 (`protocol.messages.PreviewAddress`,
PROTOCOL.md "Preview control") and, on a terminal, as keys.

Signal path (pyo, at the source sample rate; every gain is a linear ``SigTo`` ramp of
``ramp`` seconds, default 20 ms)::

    out[o] = master * (xf * sum_s(g_s * stem_s[c]) + (1 - xf) * mixture[c])
             o = output channel 0, 1;  c = min(o, channels - 1) (a mono song plays on both)

``g_s`` is a stem's gain (0 when muted or not soloed), ``xf`` is 1 where the stems are
final from the playhead through ``block + ramp + block`` frames ahead (so a fade back to
the mixture is complete before the stems run out), ``master`` fades out and in around
seeks, stops and starts. Each pyo block (``block`` frames), a `Server.setCallback`
callback copies the block's window of every stem and of the mixture from the mapped
arrays into block-long pyo tables read by ``TableScan``: pyo's table readers index with
float32 positions, exact only below 2**24 frames (6.3 min at 44.1 kHz), so reading the
whole mapped stems through them would misplace samples in long songs; the block copy is
sample exact at any length and costs ``stems x channels x block`` floats per block.

The stages, one module each:

| module | what |
|---|---|
| `controls` | per-stem gain/mute/solo and play/stop/seek requests; the OSC control messages (no pyo) |
| `crossfade` | when the stems play and when the mixture; the two fades' bookkeeping (no pyo) |
| `source` | the stems in shared memory: final ranges, block windows (no pyo) |
| `report` | what was played: counters, fallbacks, timeline, events (no pyo) |
| `mixer` | the pyo graph: block tables, gain ramps, the two fades, capture |
| `player` | `PreviewPlayer`: the per-block transport that ties the parts together |
| `device` | pyo on first use, audio device checks, the booted pyo server |
| `osc` | the control socket on 127.0.0.1 (`bridge.udp.UdpEndpoint`) |
| `keys` | the terminal key thread |
| `automation` | ``--automation`` cue files and the offline render loop |
| `compare` | ``--master``: A/B of a master and its original, loudness matched |
| `job` | which server, following the job, releasing it |
| `command` | ``stembridge preview``: `add_parser`, `run` |

Units: positions are frames at the source rate (`int`), times are seconds (`float`),
gains are linear factors unless named ``_db``. Nothing here imports pyo, numpy or the
engine at import time.
"""

from __future__ import annotations

from bridge.preview.automation import Cue, read_automation, render
from bridge.preview.command import add_parser, run
from bridge.preview.controls import GAIN_DB_RANGE, GAIN_LINEAR_RANGE, Controls
from bridge.preview.device import (
    NO_DEVICE_HELP,
    boot_server,
    check_audio_device,
    output_device_count,
)
from bridge.preview.keys import KEY_SEEK_S, KeyControl
from bridge.preview.osc import PreviewOscServer
from bridge.preview.player import PreviewPlayer

__all__ = [
    "GAIN_DB_RANGE", "GAIN_LINEAR_RANGE", "KEY_SEEK_S", "NO_DEVICE_HELP", "Controls", "Cue",
    "KeyControl", "PreviewOscServer", "PreviewPlayer", "add_parser", "boot_server",
    "check_audio_device", "output_device_count", "read_automation", "render", "run",
]
