-- @noindex
-- stembridge for REAPER, stage "tracks": the folder and stem tracks of a split, inserted
-- under the source item's track, found again by GUID, and removed (with the source item
-- unmuted) when a split fails or is cancelled. Loaded by stembridge_core.lua with the
-- util stage; returns the table T.

local U = ...

local T = {}

--- The stem tracks of a record: {stem -> MediaTrack} (missing ones left out). Cached in
--- `rec._tr` while the pointers stay valid.
function T.stem_tracks(rec)
  local out = {}
  for _, stem in ipairs(rec.names) do
    local guid = rec.tracks[stem]
    local tr = rec._tr and rec._tr[stem]
    if not (tr and reaper.ValidatePtr2(rec.proj, tr, "MediaTrack*")) then
      tr = guid and U.find_track(rec.proj, guid)
    end
    if tr then out[stem] = tr end
  end
  rec._tr = out
  return out
end

--- Insert the folder track (if the setting asks for one) named "<name> (stems)" and one
--- track per stem of `names`, at track index `at` (0-based). Returns {folder guid or
--- nil, stem -> guid} and the index after the last track inserted.
function T.insert_tracks(proj, at, name, names)
  local colors = U.stem_colors()
  local out = {}
  local with_folder = U.flag("folder_track")
  local idx = at
  if with_folder then
    reaper.InsertTrackAtIndex(idx, true)
    local folder = reaper.GetTrack(proj, idx)
    reaper.GetSetMediaTrackInfo_String(folder, "P_NAME", name .. " (stems)", true)
    reaper.SetMediaTrackInfo_Value(folder, "I_FOLDERDEPTH", 1)
    out.folder = reaper.GetTrackGUID(folder)
    idx = idx + 1
  end
  for i, stem in ipairs(names) do
    reaper.InsertTrackAtIndex(idx, true)
    local tr = reaper.GetTrack(proj, idx)
    reaper.GetSetMediaTrackInfo_String(tr, "P_NAME", stem, true)
    reaper.SetMediaTrackInfo_Value(tr, "I_FOLDERDEPTH", (with_folder and i == #names) and -1 or 0)
    if colors[stem] then reaper.SetMediaTrackInfo_Value(tr, "I_CUSTOMCOLOR", colors[stem]) end
    out[stem] = reaper.GetTrackGUID(tr)
    idx = idx + 1
  end
  return out, idx
end

--- Remove a record's tracks (failed or cancelled job) and unmute the source item, as one
--- undo point named `undo`.
function T.remove_tracks(rec, undo)
  reaper.Undo_BeginBlock2(rec.proj)
  reaper.PreventUIRefresh(1)
  local tracks = T.stem_tracks(rec)
  for _, stem in ipairs(rec.names) do
    if tracks[stem] then reaper.DeleteTrack(tracks[stem]) end
  end
  local folder = rec.tracks.folder and U.find_track(rec.proj, rec.tracks.folder)
  if folder then reaper.DeleteTrack(folder) end
  if rec.muted_source then
    local item = U.find_item(rec.proj, rec.item)
    if item then reaper.SetMediaItemInfo_Value(item, "B_MUTE", 0) end
  end
  reaper.PreventUIRefresh(-1)
  reaper.Undo_EndBlock2(rec.proj, undo, -1)
  reaper.UpdateArrange()
end

return T
