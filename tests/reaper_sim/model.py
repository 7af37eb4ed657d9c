"""The simulated REAPER's objects (the handles a script holds) and its errors.

Tracks, items, takes, sources and projects are plain data; `alive` tells whether a handle
still points at something (REAPER would crash on a deleted one: `DeadPointer`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.reaper_sim.undo import UndoHistory


class NotSimulated(RuntimeError):
    """A real REAPER function the simulation does not implement (yet)."""


class ReaperArgError(TypeError):
    """Bad arguments, as REAPER reports them ("bad argument #n to 'X'")."""


# Every item/take parameter REAPER documents for Get/SetMedia*Info_Value that the
# simulation models, with REAPER's defaults. Others REAPER knows raise NotSimulated; names
# REAPER does not know read 0 and fail to set, as in REAPER.
ITEM_DEFAULTS = {
    "B_MUTE": 0.0, "B_MUTE_ACTUAL": 0.0, "B_LOOPSRC": 1.0, "B_UISEL": 0.0, "D_VOL": 1.0,
    "D_POSITION": 0.0, "D_LENGTH": 0.0, "D_SNAPOFFSET": 0.0, "D_FADEINLEN": 0.0,
    "D_FADEOUTLEN": 0.0, "D_FADEINDIR": 0.0, "D_FADEOUTDIR": 0.0, "D_FADEINLEN_AUTO": -1.0,
    "D_FADEOUTLEN_AUTO": -1.0, "C_FADEINSHAPE": 0.0, "C_FADEOUTSHAPE": 0.0,
    "I_CUSTOMCOLOR": 0.0, "I_CURTAKE": 0.0, "C_LOCK": 0.0,
}
ITEM_KNOWN = set(ITEM_DEFAULTS) | {
    "B_ALLTAKESPLAY", "C_BEATATTACHMODE", "C_AUTOSTRETCH", "I_GROUPID", "I_LASTY",
    "I_LASTH", "F_FREEMODE_Y", "F_FREEMODE_H", "I_FIXEDLANE", "B_FIXEDLANE_HIDDEN",
    "P_TRACK", "D_POSITION_QN"}
TAKE_DEFAULTS = {
    "D_STARTOFFS": 0.0, "D_VOL": 1.0, "D_PAN": 0.0, "D_PANLAW": -1.0, "D_PLAYRATE": 1.0,
    "D_PITCH": 0.0, "B_PPITCH": 0.0, "I_PITCHMODE": -1.0, "I_CHANMODE": 0.0,
    "I_CUSTOMCOLOR": 0.0,
}
TAKE_KNOWN = set(TAKE_DEFAULTS) | {
    "I_LASTY", "I_LASTH", "I_STRETCHFLAGS", "F_STRETCHFADESIZE", "I_RECPASSID",
    "I_TAKEFX_NCH", "I_CHANNELS", "P_TRACK", "P_ITEM", "P_SOURCE", "IP_TAKENUMBER"}


@dataclass(eq=False)
class Source:
    """A PCM_source: a media file, a section of a parent source, or a MIDI/empty source."""

    kind: str = "WAVE"
    filename: str = ""
    parent: Source | None = None
    section: tuple[float, float, bool] = (0.0, 0.0, False)  # offset s, length s, reversed
    samplerate: int = 44100
    channels: int = 2
    length: float = 0.0
    peaks_state: int = 0  # 0 none, 1 building, 2 built
    alive: bool = True


@dataclass(eq=False)
class Take:
    source: Source | None
    name: str = ""
    values: dict[str, float] = field(default_factory=lambda: dict(TAKE_DEFAULTS))
    item: Item | None = None


@dataclass(eq=False)
class Item:
    track: Track
    values: dict[str, float] = field(default_factory=lambda: dict(ITEM_DEFAULTS))
    takes: list[Take] = field(default_factory=list)
    selected: bool = False
    guid: str = ""
    strings: dict[str, str] = field(default_factory=dict)  # P_NOTES, P_EXT:*

    @property
    def active(self) -> Take | None:
        i = int(self.values["I_CURTAKE"])
        return self.takes[i] if 0 <= i < len(self.takes) else None


@dataclass(eq=False)
class Track:
    name: str = ""
    folder_depth: int = 0
    color: int = 0
    mute: bool = False
    guid: str = ""
    items: list[Item] = field(default_factory=list)
    strings: dict[str, str] = field(default_factory=dict)  # P_EXT:*
    alive: bool = True


@dataclass(eq=False)
class Project:
    tracks: list[Track] = field(default_factory=list)
    ext: dict[str, dict[str, str]] = field(default_factory=dict)
    path: str = ""          # the project's media (recording) folder
    cursor: float = 0.0
    play_position: float = 0.0
    play_state: int = 0     # &1 playing, &2 paused, &4 recording
    history: UndoHistory = field(default_factory=UndoHistory)
    undo_depth: int = 0
    changes: int = 0        # GetProjectStateChangeCount

    @property
    def undo_points(self) -> list[tuple[str, list[Track]]]:
        """The undo points applied now: (description, saved state)."""
        return self.history.applied()


_HANDLES = {"MediaTrack": Track, "MediaItem": Item, "MediaItem_Take": Take,
            "PCM_source": Source, "ReaProject": Project}


class DeadPointer(RuntimeError):
    """A script used a deleted track/item/take/source: REAPER would crash."""


def _alive(obj: Any) -> bool:
    if isinstance(obj, Track):
        return obj.alive
    if isinstance(obj, Item):
        return obj.track.alive and obj in obj.track.items
    if isinstance(obj, Take):
        return obj.item is not None and _alive(obj.item) and obj in obj.item.takes
    if isinstance(obj, Source):
        return obj.alive
    return True


