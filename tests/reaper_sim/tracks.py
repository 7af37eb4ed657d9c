"""The simulated REAPER's tracks, items and takes: creating, finding, deleting them, and
their documented parameters (Get/Set*Info_Value, GetSet*Info_String). A mixin of
`sim.ReaperSim`."""

from __future__ import annotations

from typing import Any

from tests.reaper_sim.model import (
    ITEM_KNOWN,
    TAKE_KNOWN,
    DeadPointer,
    Item,
    NotSimulated,
    Project,
    Take,
    Track,
)


class TracksMixin:
    """Tracks, items and takes; `new_track` for tests."""

    projects: list[Project]

    # Provided by ProjectsMixin, first in ReaperSim's bases (declared for readers).
    @property
    def project(self) -> Project:
        raise NotImplementedError

    def _proj(self, proj: Any) -> Project:
        raise NotImplementedError

    def _guid(self) -> str:
        raise NotImplementedError

    def new_track(self, name: str = "", index: int | None = None, depth: int = 0,
                  project: Project | None = None) -> Track:
        """A track made by the user (test setup)."""
        proj = project or self.project
        tr = Track(name=name, folder_depth=depth, guid=self._guid())
        proj.tracks.insert(len(proj.tracks) if index is None else index, tr)
        return tr


    def _track(self, proj: Any, idx: Any) -> Track | None:
        tracks = self._proj(proj).tracks
        i = int(idx)
        return tracks[i] if 0 <= i < len(tracks) else None

    def _project_of(self, tr: Track) -> Project:
        for p in self.projects:
            if tr in p.tracks:
                return p
        raise DeadPointer("track of no open project")

    def _CountTracks(self, proj: Any) -> int:
        return len(self._proj(proj).tracks)

    def _GetTrack(self, proj: Any, idx: int) -> Track | None:
        return self._track(proj, idx)

    def _InsertTrackAtIndex(self, idx: int, want_defaults: bool) -> None:
        tracks = self.project.tracks
        i = max(0, min(int(idx), len(tracks)))
        tracks.insert(i, Track(guid=self._guid()))

    def _DeleteTrack(self, tr: Track) -> None:
        self._project_of(tr).tracks.remove(tr)
        tr.alive = False

    def _GetTrackGUID(self, tr: Track) -> str:
        return tr.guid

    def _GetSetMediaTrackInfo_String(self, tr: Track, parm: str, value: str, set_new: bool
                                     ) -> tuple[bool, str]:
        if parm == "P_NAME":
            if set_new:
                tr.name = value
            return True, tr.name
        if parm == "GUID":
            if set_new:
                tr.guid = value
            return True, tr.guid
        if parm.startswith("P_EXT:"):
            if set_new:
                tr.strings[parm] = value
            return parm in tr.strings, tr.strings.get(parm, "")
        raise NotSimulated(f"GetSetMediaTrackInfo_String {parm!r} is not simulated yet")

    _TRACK_VALUES = {"I_FOLDERDEPTH": "folder_depth", "I_CUSTOMCOLOR": "color", "B_MUTE": "mute"}

    def _GetMediaTrackInfo_Value(self, tr: Track, parm: str) -> float:
        if parm == "IP_TRACKNUMBER":  # 1-based, read-only
            return float(self._project_of(tr).tracks.index(tr) + 1)
        attr = self._TRACK_VALUES.get(parm)
        if attr is None:
            raise NotSimulated(f"track parameter {parm!r} is not simulated yet")
        return float(getattr(tr, attr))

    def _SetMediaTrackInfo_Value(self, tr: Track, parm: str, value: float) -> bool:
        attr = self._TRACK_VALUES.get(parm)
        if attr is None:
            raise NotSimulated(f"track parameter {parm!r} is not simulated yet")
        setattr(tr, attr, bool(value) if attr == "mute" else int(value))
        return True

    # ------------------------------------------------------------------ items and takes

    def _selected(self, proj: Any) -> list[Item]:
        return [it for tr in self._proj(proj).tracks for it in tr.items if it.selected]

    def _CountSelectedMediaItems(self, proj: Any) -> int:
        return len(self._selected(proj))

    def _GetSelectedMediaItem(self, proj: Any, selitem: int) -> Item | None:
        sel = self._selected(proj)
        i = int(selitem)
        return sel[i] if 0 <= i < len(sel) else None

    def _SetMediaItemSelected(self, item: Item, selected: bool) -> None:
        item.selected = bool(selected)

    def _CountTrackMediaItems(self, tr: Track) -> int:
        return len(tr.items)

    def _GetTrackMediaItem(self, tr: Track, idx: int) -> Item | None:
        i = int(idx)
        items = sorted(tr.items, key=lambda it: it.values["D_POSITION"])
        return items[i] if 0 <= i < len(items) else None

    def _GetMediaItem_Track(self, item: Item) -> Track:
        return item.track

    def _AddMediaItemToTrack(self, tr: Track) -> Item:
        item = Item(track=tr, guid=self._guid())
        tr.items.append(item)
        return item

    def _AddTakeToMediaItem(self, item: Item) -> Take:
        take = Take(source=None, item=item)
        item.takes.append(take)
        if len(item.takes) == 1:
            item.values["I_CURTAKE"] = 0.0
        return take

    def _CountTakes(self, item: Item) -> int:
        return len(item.takes)

    def _DeleteTrackMediaItem(self, tr: Track, item: Item) -> bool:
        if item not in tr.items:
            return False
        tr.items.remove(item)
        for take in item.takes:
            if take.source is not None:
                take.source.alive = False  # the item owned its sources
        return True

    def _GetActiveTake(self, item: Item) -> Take | None:
        return item.active

    def _TakeIsMIDI(self, take: Take) -> bool:
        return take.source is not None and take.source.kind == "MIDI"

    def _GetTakeName(self, take: Take) -> str:
        return take.name

    def _GetSetMediaItemTakeInfo_String(self, take: Take, parm: str, value: str,
                                        set_new: bool) -> tuple[bool, str]:
        if parm != "P_NAME":
            raise NotSimulated(f"GetSetMediaItemTakeInfo_String {parm!r} is not simulated yet")
        if set_new:
            take.name = value
        return True, take.name

    def _GetSetMediaItemInfo_String(self, item: Item, parm: str, value: str, set_new: bool
                                    ) -> tuple[bool, str]:
        if parm == "GUID":
            if set_new:
                item.guid = value
            return True, item.guid
        if parm == "P_NOTES" or parm.startswith("P_EXT:"):
            if set_new:
                item.strings[parm] = value
            return parm in item.strings, item.strings.get(parm, "")
        raise NotSimulated(f"GetSetMediaItemInfo_String {parm!r} is not simulated yet")

    def _GetMediaItemInfo_Value(self, item: Item, parm: str) -> float:
        if parm in item.values:
            return float(item.values[parm])
        if parm in ITEM_KNOWN:
            raise NotSimulated(f"item parameter {parm!r} is not simulated yet")
        return 0.0

    def _SetMediaItemInfo_Value(self, item: Item, parm: str, value: float) -> bool:
        if parm in item.values:
            if parm == "D_LENGTH" and value < 0:
                value = 0.0
            item.values[parm] = float(value)
            return True
        if parm in ITEM_KNOWN:
            raise NotSimulated(f"item parameter {parm!r} is not simulated yet")
        return False

    def _GetMediaItemTakeInfo_Value(self, take: Take, parm: str) -> float:
        if parm in take.values:
            return float(take.values[parm])
        if parm in TAKE_KNOWN:
            raise NotSimulated(f"take parameter {parm!r} is not simulated yet")
        return 0.0

    def _SetMediaItemTakeInfo_Value(self, take: Take, parm: str, value: float) -> bool:
        if parm in take.values:
            take.values[parm] = float(value)
            return True
        if parm in TAKE_KNOWN:
            raise NotSimulated(f"take parameter {parm!r} is not simulated yet")
        return False

