"""Writing audio files atomically: a whole ``(channels, frames)`` array (`write_audio`),
or a stem whose regions arrive at any offset, in any order (`StemFileWriter`).

Every file is written to a temporary file in the target's folder and renamed into place
only when complete (`protocol.files.make_temp` and `publish`): a reader, or a process
killed mid-write, never sees a partial result. Output is WAV (32-bit float, or 24/16-bit
PCM; RF64 beyond 4 GiB), FLAC (24/16-bit) or, from a stem writer, MP3 (ffmpeg's LAME
encoder: 320 kbit/s CBR or VBR V0); rates are Hz. 16-bit output gets TPDF dither (two
uniform values of +-1/2 LSB summed, seeded per file, so the same input gives the same
file): quiet passages keep their detail instead of being truncated to silence.
soundfile is imported on first use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InvalidArgumentError, OutputError
from protocol.files import make_temp, publish, remove_stale_temps

#: Largest PCM value written: 1 - 2**-23, i.e. the 24-bit code 8388607.
PCM_MAX = float(np.float32(1.0 - 2.0**-23))

_WRITE_BLOCK_SECONDS = 5
_WAV_MAX_DATA_BYTES = 0xFFFFFFFF - 4096  # beyond this a float WAV must be RF64

_OUTPUT_SUBTYPES = {"wav": ("FLOAT", "PCM_24", "PCM_16"), "flac": ("PCM_24", "PCM_16"),
                    "mp3": ("CBR320", "V0")}
#: LAME's arguments per MP3 subtype.
_MP3_ARGS = {"CBR320": ["-b:a", "320k"], "V0": ["-q:a", "0"]}
#: Seconds an MP3 encode may take per minute of audio (and at least a minute).
_MP3_SECONDS_PER_MINUTE = 30


def _output_format(fmt: str, subtype: str | None) -> tuple[str, str]:
    """Normalised ``(fmt, subtype)``: wav defaults to FLOAT, flac to PCM_24."""
    fmt = str(fmt).lower()
    if fmt not in _OUTPUT_SUBTYPES:
        raise InvalidArgumentError(
            f"output format must be 'wav', 'flac' or 'mp3', not {fmt!r}.")
    allowed = _OUTPUT_SUBTYPES[fmt]
    chosen = allowed[0] if subtype is None else str(subtype).upper()
    if chosen not in allowed:
        raise InvalidArgumentError(
            f"subtype {subtype!r} is not available for {fmt}; choose one of {', '.join(allowed)}."
        )
    return fmt, chosen


def _container(fmt: str, channels: int, frames: int, subtype: str) -> str:
    """libsndfile container: RF64 for a WAV whose data would pass the 4 GiB RIFF limit."""
    if fmt == "flac":
        return "FLAC"
    width = {"FLOAT": 4, "PCM_24": 3, "PCM_16": 2}[subtype]
    return "RF64" if channels * frames * width > _WAV_MAX_DATA_BYTES else "WAV"


def _pcm_block(block: np.ndarray, subtype: str = "PCM_24",
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Clip to the PCM range [-1, 1 - 2**-23]; NaN becomes 0, ±inf full scale. For
    ``PCM_16``: TPDF dither from `rng` (triangular, +-1 LSB), then rounded to the nearest
    16-bit code ourselves (int16 out: libsndfile's own float conversion truncates)."""
    safe = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
    if subtype != "PCM_16":
        return np.clip(safe, -1.0, PCM_MAX, out=safe)
    gen = rng if rng is not None else np.random.default_rng(0)
    noise = (gen.random(safe.shape, dtype=np.float32)
             - gen.random(safe.shape, dtype=np.float32))
    codes = np.rint(safe * np.float32(32768.0) + noise)
    return np.clip(codes, -32768, 32767).astype(np.int16)


def _check_output_array(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise InvalidArgumentError(
            f"audio to write must be shaped (channels, frames) with at least one frame, "
            f"got {x.shape}."
        )
    return x


def _output_error(path: Path, exc: BaseException) -> OutputError:
    reason = getattr(exc, "strerror", None) or str(exc)
    return OutputError(
        f"Could not write '{path}': {reason}. Check that the folder exists, is writable and "
        "has enough free space."
    )


def _unlink(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _target_dir(path: Path) -> Path:
    directory = path.parent
    if not directory.is_dir():
        raise OutputError(
            f"Cannot write '{path}': the folder '{directory}' does not exist. Create it first "
            "or choose another output folder."
        )
    return directory


def write_audio(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    samplerate: int,
    fmt: str = "wav",
    subtype: str | None = None,
) -> Path:
    """Write ``audio (channels, frames)`` atomically: a temp file in the same folder,
    fsync, then `os.replace` (an existing file is replaced; a crash leaves the old file or
    none, never a partial one).

    Args:
        path: target file.
        audio: float samples shaped ``(channels, frames)``.
        samplerate: Hz.
        fmt: ``"wav"`` (default subtype ``"FLOAT"``, 32-bit float; or ``"PCM_24"``,
            ``"PCM_16"``) or ``"flac"`` (``"PCM_24"`` default, or ``"PCM_16"``).
            Float WAVs over 4 GiB are written as RF64.
        subtype: see `fmt`. PCM output is hard-clipped to [-1, 1 - 2**-23] (no limiter);
            NaN is written as 0. FLOAT keeps values as they are.

    Returns:
        The target path.

    Raises:
        InvalidArgumentError: bad shape, format or subtype.
        OutputError: the folder is missing, not writable or full.
    """
    fmt, subtype = _output_format(fmt, subtype)
    if fmt == "mp3":
        raise InvalidArgumentError("MP3 is written by a stem writer (StemFileWriter.commit); "
                                   "write a whole array as wav or flac.")
    x = _check_output_array(audio)
    target = Path(path)
    directory = _target_dir(target)
    tmp: Path | None = None
    try:
        tmp = make_temp(directory, "." + fmt)
        _write_array(tmp, x, int(samplerate), fmt, subtype)
        publish(tmp, target)
    except (OSError, RuntimeError) as exc:
        _unlink(tmp)
        raise _output_error(target, exc) from None
    except BaseException:
        _unlink(tmp)
        raise
    return target


def _write_array(tmp: Path, x: np.ndarray, samplerate: int, fmt: str, subtype: str) -> None:
    import soundfile as sf

    channels, frames = x.shape
    block = max(1, _WRITE_BLOCK_SECONDS * samplerate)
    container = _container(fmt, channels, frames, subtype)
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(tmp), "w", samplerate, channels, subtype, format=container) as out:
        for start in range(0, frames, block):
            chunk = np.ascontiguousarray(x[:, start : start + block].T, dtype=np.float32)
            out.write(chunk if subtype == "FLOAT" else _pcm_block(chunk, subtype, rng))


class StemFileWriter:
    """One output file whose regions arrive at any offset, in any order.

    A float32 WAV (RF64 beyond 4 GiB) of `total_frames` zero frames is created as a
    ``.stembridge-tmp-*`` file in `directory`, then reopened read/write; `write` puts
    regions in place, `commit` publishes the result atomically under its final name (as
    float WAV directly, or transcoded block by block to FLAC / PCM WAV). Memory use is one
    region plus one block (about 5 s), whatever the file length. Until `commit` returns no
    file exists at the final path, so a killed process never leaves a partial result (only
    a temp file, which `remove_stale_temp_files` cleans up).

    Use as a context manager: leaving the block with an exception, or without `commit`,
    calls `abort`. `write`, `commit` and `abort` may be called from different threads.

    Example::

        with StemFileWriter(out_dir, total_frames=n, channels=2, samplerate=44100) as w:
            for start, region in regions:          # region: (2, m) float32
                w.write(start, region)
            w.commit(out_dir / "vocals.flac", fmt="flac")
    """

    def __init__(
        self, directory: str | os.PathLike[str], total_frames: int, channels: int, samplerate: int
    ) -> None:
        if total_frames < 1 or channels < 1 or samplerate < 1:
            raise InvalidArgumentError(
                f"StemFileWriter needs total_frames >= 1, channels >= 1 and samplerate >= 1 "
                f"(got {total_frames}, {channels}, {samplerate})."
            )
        self.directory = Path(directory)
        self.total_frames, self.channels = int(total_frames), int(channels)
        self.samplerate = int(samplerate)
        self._lock = threading.Lock()
        self._file: Any = None
        self._temps: list[Path] = []
        self._state = "open"
        self._create()

    @property
    def temp_path(self) -> Path:
        """The pre-sized float32 WAV being written."""
        return self._temps[0]

    def _create(self) -> None:
        import soundfile as sf

        if not self.directory.is_dir():
            raise OutputError(
                f"Output folder '{self.directory}' does not exist. Create it first or choose "
                "another output folder."
            )
        self._check_space(self.directory, self.total_frames * self.channels * 4)
        try:
            tmp = make_temp(self.directory, ".wav")
        except OSError as exc:  # read-only or full file system, no permission
            raise _output_error(self.directory, exc) from None
        self._temps.append(tmp)
        try:
            container = _container("wav", self.channels, self.total_frames, "FLOAT")
            if not (container == "WAV" and self._create_sparse(tmp)):
                with sf.SoundFile(
                    str(tmp), "w", self.samplerate, self.channels, "FLOAT", format=container
                ) as fh:
                    block = max(1, _WRITE_BLOCK_SECONDS * self.samplerate)
                    zeros = np.zeros((min(block, self.total_frames), self.channels), np.float32)
                    for start in range(0, self.total_frames, block):
                        fh.write(zeros[: min(block, self.total_frames - start)])
            self._file = sf.SoundFile(str(tmp), "r+")
        except (OSError, RuntimeError) as exc:
            self._remove_temps()
            raise _output_error(tmp, exc) from None

    def _create_sparse(self, tmp: Path) -> bool:
        """Make `tmp` a float WAV of `total_frames` zero frames without writing them: write
        one frame with libsndfile, extend the file (the hole reads as zeros, instantly) and
        patch the RIFF, ``fact`` and ``data`` sizes. False if the layout is not the expected
        one (the caller then writes zeros)."""
        import soundfile as sf

        with sf.SoundFile(
            str(tmp), "w", self.samplerate, self.channels, "FLOAT", format="WAV"
        ) as fh:
            fh.write(np.zeros((1, self.channels), np.float32))
        frame_bytes = 4 * self.channels
        with open(tmp, "r+b") as fh:
            head = bytearray(fh.read(4096))
            size = os.fstat(fh.fileno()).st_size
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return False
            pos, fact, data = 12, None, None
            while pos + 8 <= len(head):
                cid, csize = (
                    bytes(head[pos : pos + 4]),
                    int.from_bytes(head[pos + 4 : pos + 8], "little"),
                )
                if cid == b"fact":
                    fact = pos + 8
                if cid == b"data":
                    data = pos
                    break
                pos += 8 + csize + (csize & 1)
            if data is None or data + 8 + frame_bytes != size:
                return False
            data_bytes = self.total_frames * frame_bytes
            head[data + 4 : data + 8] = data_bytes.to_bytes(4, "little")
            head[4:8] = (data + 8 + data_bytes - 8).to_bytes(4, "little")
            if fact is not None:
                head[fact : fact + 4] = self.total_frames.to_bytes(4, "little")
            fh.truncate(data + 8 + data_bytes)
            fh.seek(0)
            fh.write(head[: data + 8])
        with sf.SoundFile(str(tmp)) as check:
            return check.frames == self.total_frames

    @staticmethod
    def _check_space(directory: Path, needed: int) -> None:
        free = shutil.disk_usage(directory).free
        if needed > free:
            raise OutputError(
                f"Not enough free space in '{directory}': {needed / 1e6:.0f} MB needed, "
                f"{free / 1e6:.0f} MB free. Free some space or choose another output folder."
            )

    def write(self, start_frame: int, audio: np.ndarray) -> None:
        """Put ``audio (channels, n)`` at frames ``[start_frame, start_frame + n)``.

        Regions may come in any order; writing a frame twice keeps the last write.
        """
        x = np.asarray(audio)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise InvalidArgumentError(
                f"expected a region shaped ({self.channels}, frames), got {x.shape}."
            )
        stop = start_frame + x.shape[1]
        if start_frame < 0 or stop > self.total_frames:
            raise InvalidArgumentError(
                f"region [{start_frame}, {stop}) lies outside the file [0, {self.total_frames})."
            )
        frames = np.ascontiguousarray(x.T, dtype=np.float32)
        with self._lock:
            self._require_open()
            try:
                self._file.seek(start_frame)
                self._file.write(frames)
            except (OSError, RuntimeError) as exc:
                raise _output_error(self.temp_path, exc) from None

    def resample(self, samplerate: int) -> None:
        """Resample everything written so far to `samplerate` Hz (soxr, very high
        quality), block by block into a new temporary float WAV that replaces the current
        one; `total_frames` becomes ``round(total_frames * samplerate / old rate)``."""
        import soundfile as sf
        import soxr

        with self._lock:
            self._require_open()
            if int(samplerate) == self.samplerate:
                return
            frames = round(self.total_frames * int(samplerate) / self.samplerate)
            self._check_space(self.directory, frames * self.channels * 4)
            self._file.close()
            try:
                tmp = make_temp(self.directory, ".wav")
                self._temps.append(tmp)
                stream = soxr.ResampleStream(self.samplerate, int(samplerate), self.channels,
                                             dtype="float32", quality="VHQ")
                container = _container("wav", self.channels, frames, "FLOAT")
                with (sf.SoundFile(str(self.temp_path), "r") as src,
                      sf.SoundFile(str(tmp), "w", int(samplerate), self.channels, "FLOAT",
                                   format=container) as dst):
                    done, block = 0, max(1, _WRITE_BLOCK_SECONDS * self.samplerate)
                    while True:
                        chunk = src.read(block, dtype="float32", always_2d=True)
                        out = stream.resample_chunk(chunk, last=chunk.shape[0] < block)
                        out = out[: frames - done]
                        dst.write(out)
                        done += out.shape[0]
                        if chunk.shape[0] < block:
                            break
                    if done < frames:  # soxr's length differs by a frame at most
                        dst.write(np.zeros((frames - done, self.channels), np.float32))
            except (OSError, RuntimeError) as exc:
                self._state = "failed"
                self._remove_temps()
                raise _output_error(self.directory, exc) from None
            _unlink(self._temps.pop(0))
            self._temps.remove(tmp)
            self._temps.insert(0, tmp)
            self.total_frames, self.samplerate = frames, int(samplerate)
            self._file = sf.SoundFile(str(tmp), "r+")

    def peak(self) -> float:
        """The largest absolute sample written so far (linear full scale; NaN counts 0)."""
        with self._lock:
            self._require_open()
            self._file.seek(0)
            top, block = 0.0, max(1, _WRITE_BLOCK_SECONDS * self.samplerate)
            while (chunk := self._file.read(block, dtype="float32", always_2d=True)).shape[0]:
                top = max(top, float(np.nanmax(np.abs(chunk))))
            return top

    def commit(
        self, final_path: str | os.PathLike[str], fmt: str = "wav", subtype: str | None = None,
        gain: float = 1.0,
    ) -> Path:
        """Publish the file at `final_path` atomically (see `write_audio` for `fmt` and
        `subtype`; PCM output is clipped to [-1, 1 - 2**-23]), every sample multiplied
        by `gain` (linear) first. Returns `final_path`."""
        fmt, subtype = _output_format(fmt, subtype)
        target = Path(final_path)
        with self._lock:
            self._require_open()
            try:
                self._file.close()
                directory = _target_dir(target)
                if (fmt == "wav" and subtype == "FLOAT" and gain == 1.0
                        and _same_dir(directory, self.directory)):
                    publish(self.temp_path, target)
                elif fmt == "mp3":
                    source = self.temp_path
                    if gain != 1.0:
                        source = self._copy(directory, "wav", "FLOAT", gain)
                    self._encode_mp3(source, target, directory, subtype)
                else:
                    publish(self._copy(directory, fmt, subtype, gain), target)
            except (OSError, RuntimeError) as exc:
                self._state = "failed"
                self._remove_temps()
                raise _output_error(target, exc) from None
            except BaseException:
                self._state = "failed"
                self._remove_temps()
                raise
            self._state = "committed"
            self._remove_temps()
        return target

    def _copy(self, directory: Path, fmt: str, subtype: str, gain: float) -> Path:
        """Copy the temp WAV, times `gain`, block by block into a new temp file in
        `directory` (`fmt`, `subtype`); returns its path."""
        import soundfile as sf

        out_tmp = make_temp(directory, "." + fmt)
        self._temps.append(out_tmp)
        block = max(1, _WRITE_BLOCK_SECONDS * self.samplerate)
        container = _container(fmt, self.channels, self.total_frames, subtype)
        with (
            sf.SoundFile(str(self.temp_path), "r") as src,
            sf.SoundFile(
                str(out_tmp), "w", self.samplerate, self.channels, subtype, format=container
            ) as dst,
        ):
            rng = np.random.default_rng(0)
            while (chunk := src.read(block, dtype="float32", always_2d=True)).shape[0]:
                if gain != 1.0:
                    chunk *= np.float32(gain)
                dst.write(chunk if subtype == "FLOAT" else _pcm_block(chunk, subtype, rng))
        return out_tmp

    def _encode_mp3(self, source: Path, target: Path, directory: Path, subtype: str) -> None:
        """Encode the float WAV `source` with ffmpeg's LAME into a temp file, then publish."""
        import subprocess

        from engine.audio.ffmpeg import INSTALL_FFMPEG, ffmpeg_input, find_ffmpeg, last_line

        tools = find_ffmpeg()
        if tools is None:
            raise InvalidArgumentError(f"MP3 output needs ffmpeg. {INSTALL_FFMPEG}")
        out_tmp = make_temp(directory, ".mp3")
        self._temps.append(out_tmp)
        minutes = self.total_frames / max(1, self.samplerate) / 60
        limit = max(60.0, minutes * _MP3_SECONDS_PER_MINUTE)
        cmd = [tools[0], "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
               "-i", ffmpeg_input(source), "-codec:a", "libmp3lame",
               *_MP3_ARGS[subtype], "-f", "mp3", "file:" + str(out_tmp)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired as exc:
            raise OSError(f"ffmpeg took more than {limit:.0f} s to encode MP3") from exc
        if done.returncode != 0:
            raise OSError(f"ffmpeg could not encode MP3: {last_line(done.stderr)}")
        publish(out_tmp, target)

    def abort(self) -> None:
        """Discard everything written; removes the temp files. Safe to call repeatedly."""
        with self._lock:
            if self._state == "open":
                self._state = "aborted"
            if self._file is not None and not self._file.closed:
                self._file.close()
            self._remove_temps()

    def _require_open(self) -> None:
        if self._state != "open":
            raise InvalidArgumentError(f"this StemFileWriter is already {self._state}.")

    def _remove_temps(self) -> None:
        for tmp in self._temps:
            _unlink(tmp)

    def __enter__(self) -> StemFileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._state != "committed":
            self.abort()


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def remove_stale_temp_files(directory: str | os.PathLike[str],
                            min_age_seconds: float = 24 * 3600) -> int:
    """`protocol.files.remove_stale_temps` with a day's grace by default (seconds), which
    spares the files of writers still running; 0 or less: every temporary file."""
    return remove_stale_temps(Path(directory), max(0.0, min_age_seconds))
