"""The simulated REAPER's media sources (PCM_source: files read with soundfile,
sections, MIDI/empty) and what a track plays (`render`). A mixin of `sim.ReaperSim`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.reaper_sim.model import Item, Project, Source, Take, Track


class SourcesMixin:
    """PCM_source functions; `new_item` and `render` for tests."""

    unopenable: set[str]

    # Provided by ProjectsMixin, first in ReaperSim's bases (declared for readers).
    @property
    def project(self) -> Project:
        raise NotImplementedError

    def _guid(self) -> str:
        raise NotImplementedError

    def new_item(self, track: Track, file: str | Path | None, position: float,
                 length: float, startoffs: float = 0.0, playrate: float = 1.0,
                 section: tuple[float, float, bool] | None = None, kind: str = "WAVE",
                 selected: bool = True, name: str = "") -> Item:
        """An item made by the user (test setup): a take of `file` (or a MIDI/empty item)."""
        item = Item(track=track, guid=self._guid(), selected=selected)
        item.values.update(D_POSITION=float(position), D_LENGTH=float(length))
        if kind != "EMPTY":
            src = self._source_for(str(file) if file else "", kind)
            if section is not None:
                src = Source(kind="SECTION", parent=src, section=section,
                             samplerate=src.samplerate, channels=src.channels,
                             length=section[1])
            take = Take(source=src, name=name or (Path(file).name if file else ""), item=item)
            take.values.update(D_STARTOFFS=float(startoffs), D_PLAYRATE=float(playrate))
            item.takes.append(take)
        track.items.append(item)
        return item

    def _source_for(self, filename: str, kind: str = "") -> Source:
        src = Source(kind=kind or "WAVE", filename=filename)
        if kind in ("MIDI", "EMPTY"):
            return src
        try:
            import soundfile as sf

            info = sf.info(filename)
            src.samplerate, src.channels = int(info.samplerate), int(info.channels)
            src.length = info.frames / info.samplerate
            src.kind = {"WAV": "WAVE", "FLAC": "FLAC", "OGG": "VORBIS"}.get(info.format,
                                                                           info.format)
        except Exception:  # a missing file: REAPER makes an offline source
            src.length = 0.0
        return src

    def render(self, track: Track, t0: float, t1: float, sr: int = 44100) -> np.ndarray:
        """What `track` plays from project time t0 to t1: (channels, frames) float64 at
        `sr` (= the sources' rate). Takes play their source from D_STARTOFFS at
        D_PLAYRATE (nearest sample); muted items, empty items and offline sources are
        silent. Fades, volume and pan are not rendered."""
        import soundfile as sf

        n = int(round((t1 - t0) * sr))
        out = np.zeros((2, n))
        for item in track.items:
            take = item.active
            if item.values["B_MUTE"] or take is None or take.source is None:
                continue
            src, offs = take.source, 0.0
            while src.parent is not None:
                offs += src.section[0]
                src = src.parent
            if not Path(src.filename).is_file():
                continue
            data, fsr = sf.read(src.filename, dtype="float64", always_2d=True)
            pos, length = item.values["D_POSITION"], item.values["D_LENGTH"]
            rate = take.values["D_PLAYRATE"]
            a = max(t0, pos)
            b = min(t1, pos + length)
            if b <= a:
                continue
            i0, i1 = int(round((a - t0) * sr)), int(round((b - t0) * sr))
            t = t0 + np.arange(i0, i1) / sr
            s = offs + take.values["D_STARTOFFS"] + (t - pos) * rate
            idx = np.round(s * fsr).astype(np.int64)
            ok = (idx >= 0) & (idx < len(data))
            chans = data.T if data.shape[1] == 2 else np.repeat(data.T, 2, axis=0)
            seg = np.zeros((2, i1 - i0))
            seg[:, ok] = chans[:, idx[ok]]
            out[:, i0:i1] += seg
        return out


    def _GetMediaItemTake_Source(self, take: Take) -> Source | None:
        return take.source

    def _SetMediaItemTake_Source(self, take: Take, source: Source) -> bool:
        # REAPER: "If source already exists in any project, it will be duplicated before
        # being set"; the old source is the caller's to destroy.
        take.source = source
        return True

    def _PCM_Source_CreateFromFile(self, filename: str) -> Source | None:
        """A source for a media file; nil where REAPER cannot open one (a missing or
        unreadable file, or one of `unopenable`: paths the test made unreadable)."""
        if not Path(filename).is_file() or any(bad in filename for bad in self.unopenable):
            return None
        src = self._source_for(filename)
        return src if src.length > 0 else None

    def _PCM_Source_Destroy(self, src: Source) -> None:
        src.alive = False

    def _GetMediaSourceParent(self, src: Source) -> Source | None:
        return src.parent

    def _PCM_Source_GetSectionInfo(self, src: Source) -> tuple[bool, float, float, bool]:
        if src.parent is None:
            return False, 0.0, 0.0, False
        offs, length, rev = src.section
        return True, offs, length, rev

    def _GetMediaSourceType(self, src: Source) -> str:
        return src.kind

    def _GetMediaSourceFileName(self, src: Source) -> str:
        return "" if src.kind == "SECTION" else src.filename

    def _GetMediaSourceSampleRate(self, src: Source) -> int:
        return src.samplerate

    def _GetMediaSourceNumChannels(self, src: Source) -> int:
        return src.channels

    def _GetMediaSourceLength(self, src: Source) -> tuple[float, bool]:
        return src.length, False

    def _PCM_Source_BuildPeaks(self, src: Source, mode: int) -> int:
        """mode 0 starts (nonzero: keep calling 1), 1 builds (0 when done), 2 finishes."""
        m = int(mode)
        if m == 0:
            if src.peaks_state == 2:
                return 0
            src.peaks_state = 1
            return 1
        if m == 1:
            return 0 if src.peaks_state >= 1 else 1
        src.peaks_state = 2
        return 0
