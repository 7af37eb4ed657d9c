-- @noindex
-- stembridge for REAPER, stage "history": what an undo or redo (or any change the monitor
-- did not make) did to the splits. REAPER's undo loads saved project states, so it can
-- bring back the items of a state saved while a job ran:
--   - a running job whose region items went or came back is placed again from its
--     manifest;
--   - the "separating..." items of a job that is done are filled with its final stems
--     again (live again: a finished split's stems never turn back into placeholders);
--   - the tracks of a cancelled or failed job are marked as such (clearly dead: nothing
--     will fill them; delete them, or split the item again).
-- None of this makes an undo point (that would cut the redo history). The monitor asks
-- after each tick's own changes (`settle`) and at the start of the next tick (`check`),
-- by the project's state change count. Loaded by stembridge_core.lua with the util,
-- tracks, placement and jobs stages; returns the table H.

local U, T, P, Jobs = ...

local H = {}

local seen = setmetatable({}, { __mode = "k" })   -- project -> change count we left it at
local ended = setmetatable({}, { __mode = "k" })  -- project -> {id -> ended record}
local version = setmetatable({}, { __mode = "k" }) -- project -> Jobs.ended_version read

--- {track GUID -> MediaTrack} of `proj`.
local function tracks_by_guid(proj)
  local out = {}
  for i = 0, reaper.CountTracks(proj) - 1 do
    local tr = reaper.GetTrack(proj, i)
    out[reaper.GetTrackGUID(tr)] = tr
  end
  return out
end

--- The record's stem tracks found in `by_guid`; nil if none is there.
local function present(rec, by_guid)
  local found = {}
  for _, stem in ipairs(rec.names) do
    local guid = rec.tracks[stem]
    if guid and by_guid[guid] then found[stem] = by_guid[guid] end
  end
  if next(found) == nil then return nil end
  rec._tr = found
  return found
end

--- Whether any of the record's "separating..." or region items is on `tracks`.
local function has_placeholders(rec, tracks)
  for _, tr in pairs(tracks) do
    if #P.items_of(rec, tr, "^gap$") > 0 or #P.items_of(rec, tr, "^region:") > 0 then
      return true
    end
  end
  return false
end

H.DEAD_NOTE = "stembridge: this split was %s; nothing will fill these tracks. Delete "
  .. "them, or split the item again."

--- Tracks of a cancelled or failed job came back: say so on them and on their items.
--- (Once per time they come back: a track already marked is left as it is; the source
--- item, muted by the split, plays again.)
local function mark_dead(rec, tracks, by_guid)
  local word = rec.state == "failed" and "failed" or "cancelled"
  local suffix = " (" .. word .. " split)"
  local note = string.format(H.DEAD_NOTE, word)
  local folder = rec.tracks.folder and by_guid[rec.tracks.folder]
  local all = { folder }
  for _, tr in pairs(tracks) do all[#all + 1] = tr end
  local _, first = reaper.GetSetMediaTrackInfo_String(all[1], "P_NAME", "", false)
  if first:sub(-#suffix) == suffix then return end
  for _, tr in ipairs(all) do
    local _, name = reaper.GetSetMediaTrackInfo_String(tr, "P_NAME", "", false)
    if name:sub(-#suffix) ~= suffix then
      reaper.GetSetMediaTrackInfo_String(tr, "P_NAME", name .. suffix, true)
    end
  end
  for _, tr in pairs(tracks) do
    for _, it in ipairs(P.items_of(rec, tr, "^gap$")) do
      reaper.GetSetMediaItemInfo_String(it, "P_NOTES", note, true)
    end
  end
  local item = rec.muted_source and U.find_item(rec.proj, rec.item)
  if item then reaper.SetMediaItemInfo_Value(item, "B_MUTE", 0) end
end

--- The placeholders of a job that is done came back: its final stems go in again (or,
--- if the stem files are gone, the tracks are marked as a dead split).
local function revive(rec, tracks, by_guid)
  for stem in pairs(tracks) do
    local path = rec.finals and rec.finals[stem]
    if not (path and reaper.file_exists(path)) then
      rec.state = "failed"
      return mark_dead(rec, tracks, by_guid)
    end
  end
  local ok = P.place_finals(rec)
  if not ok then
    rec.state = "failed"
    mark_dead(rec, tracks, by_guid)
  end
end

--- A followed running job: if its region or "separating..." items are not the ones it
--- placed (an undo or redo loaded another state), place them all again.
local function resync(rec)
  local _, tr = next(T.stem_tracks(rec))
  if not tr then return end  -- its tracks are gone: the monitor cancels it
  if #P.items_of(rec, tr, "^region:") == (rec._placed or 0)
      and #P.items_of(rec, tr, "^gap$") == (rec._gaps or 0) then
    return
  end
  P.delete_items(rec, "^region:")
  rec._next, rec._ranges, rec._placed, rec._text, rec._more = 0, {}, 0, nil, true
  P.refresh_gaps(rec)
end

--- Look at `proj` again: its running jobs, and the tracks of its ended ones.
function H.revalidate(proj)
  local by_guid
  for _, rec in ipairs(Jobs.of(proj)) do
    if rec.state == "running" then
      resync(rec)
    elseif rec.state == "cancelling" then  -- (waits for the engine to accept, to stop it)
      by_guid = by_guid or tracks_by_guid(proj)
      local tracks = present(rec, by_guid)
      if tracks and has_placeholders(rec, tracks) then
        mark_dead({ state = "cancelled", names = rec.names, tracks = rec.tracks, id = rec.id,
                    proj = proj, item = rec.item, muted_source = rec.muted_source },
                  tracks, by_guid)
      end
    end
  end
  for id, rec in pairs(ended[proj] or {}) do
    if not Jobs.get(id) and type(rec.names) == "table" and type(rec.tracks) == "table" then
      by_guid = by_guid or tracks_by_guid(proj)
      rec.proj = proj
      local tracks = present(rec, by_guid)
      if tracks and has_placeholders(rec, tracks) then
        if rec.state == "done" then
          revive(rec, tracks, by_guid)
        else
          mark_dead(rec, tracks, by_guid)
        end
      end
    end
  end
end

--- The ended records of `proj`, read again when a job ended since (or `again`).
local function ended_of(proj, again)
  if again or version[proj] ~= Jobs.ended_version then
    ended[proj] = Jobs.ended(proj)
    version[proj] = Jobs.ended_version
  end
  return ended[proj]
end

--- At the start of a tick: every project changed since the monitor's last changes (or
--- not seen yet) is looked at again. `rescan`: read the ended records again (another
--- project may have been opened in the tab). `projects`: U.projects() of this tick.
function H.check(projects, rescan)
  for _, proj in ipairs(projects) do
    ended_of(proj, rescan and ended[proj] == nil)
    if seen[proj] ~= reaper.GetProjectStateChangeCount(proj) then H.revalidate(proj) end
  end
end

--- At the end of a tick: the monitor's own changes are not the user's.
function H.settle(projects)
  for _, proj in ipairs(projects) do
    seen[proj] = reaper.GetProjectStateChangeCount(proj)
  end
end

--- Whether an open project holds ended jobs whose tracks an undo could bring back.
function H.watching(projects)
  for _, proj in ipairs(projects) do
    if next(ended_of(proj)) ~= nil then return true end
  end
  return false
end

return H
