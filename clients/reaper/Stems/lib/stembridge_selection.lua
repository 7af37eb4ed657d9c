-- @noindex
-- stembridge for REAPER, stage "selection": what a split action does at once. It reads
-- the selected audio items (file, geometry, properties), inserts a folder of stem tracks
-- under each item's track with one "separating..." item per stem aligned with the source
-- item (one undo point), and submits one job per item. Loaded by stembridge_core.lua
-- with the util, constants, tracks, placement, jobs, engine and monitor stages; returns
-- the table S.

local U, C, T, P, Jobs, E, Mon = ...

local S = {}

-- Item and take properties copied from the source item to every stem item, so that the
-- stems play exactly what the source plays (fades, gain, pitch, channel mode).
local ITEM_PARMS = { "D_VOL", "B_LOOPSRC", "D_SNAPOFFSET", "D_FADEINLEN", "D_FADEOUTLEN",
  "D_FADEINDIR", "D_FADEOUTDIR", "C_FADEINSHAPE", "C_FADEOUTSHAPE", "D_FADEINLEN_AUTO",
  "D_FADEOUTLEN_AUTO" }
local TAKE_PARMS = { "D_PLAYRATE", "D_PITCH", "B_PPITCH", "I_PITCHMODE", "D_VOL", "D_PAN",
  "I_CHANMODE" }

--- What to separate for an item: {file, geom, name} or nil, reason. `geom` in seconds:
--- pos, len (project time), offs (source time at the item's start), rate, item, take.
function S.describe_item(_proj, item)
  local take = reaper.GetActiveTake(item)
  if not take then return nil, "an empty item (no take)" end
  if reaper.TakeIsMIDI(take) then return nil, "a MIDI item" end
  local src = reaper.GetMediaItemTake_Source(take)
  local offs = 0.0
  -- Section sources (and sections of sections) play part of their parent file.
  while true do
    local parent = reaper.GetMediaSourceParent(src)
    if not parent then break end
    local ok, soffs, _len, rev = reaper.PCM_Source_GetSectionInfo(src)
    if ok and rev then
      return nil, "a reversed item (un-reverse it with Item properties: Toggle take "
        .. "reverse, split it, then reverse the stem items)"
    end
    if ok then offs = offs + soffs end
    src = parent
  end
  local kind = reaper.GetMediaSourceType(src)
  if kind == "MIDI" or kind == "EMPTY" or kind == "CLICK" then
    return nil, "not an audio item (" .. kind .. ")"
  end
  local file = reaper.GetMediaSourceFileName(src)
  if file == "" then return nil, "an item without a media file" end
  local g = {
    pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION"),
    len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH"),
    offs = offs + reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS"),
    rate = reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE"),
    item = {}, take = {},
  }
  if g.rate <= 0 then g.rate = 1.0 end
  for _, k in ipairs(ITEM_PARMS) do g.item[k] = reaper.GetMediaItemInfo_Value(item, k) end
  for _, k in ipairs(TAKE_PARMS) do g.take[k] = reaper.GetMediaItemTakeInfo_Value(take, k) end
  local name = reaper.GetTakeName(take)
  if name == "" then name = file:match("([^/\\]+)$") or "item" end
  return { file = file, geom = g, name = name }
end

--- Seconds into the source file where separation should start: the play position when
--- playing, else the edit cursor, if it lies on the item; else the item's start.
local function start_at(proj, g)
  local playing = reaper.GetPlayStateEx(proj) & 1 == 1
  local t = playing and reaper.GetPlayPositionEx(proj) or reaper.GetCursorPositionEx(proj)
  if t < g.pos or t >= g.pos + g.len then t = g.pos end
  return math.max(0.0, g.offs + (t - g.pos) * g.rate)
end

--- The selected items of `proj` that can be split ({file, geom, name, item}), and why
--- the others cannot ("item N: reason").
local function selected_items(proj)
  local items, skipped = {}, {}
  for i = 0, reaper.CountSelectedMediaItems(proj) - 1 do
    local item = reaper.GetSelectedMediaItem(proj, i)
    local info, why = S.describe_item(proj, item)
    if info then
      info.item = item
      items[#items + 1] = info
    else
      skipped[#skipped + 1] = string.format("item %d: %s", i + 1, why)
    end
  end
  return items, skipped
end

--- The items of `items` that are not being split into `stems` stems already: a saved
--- unfinished job of the same item (GUID) and stem set is followed, not started again
--- (REAPER keeps the selection when a project is reopened).
local function not_running(proj, items, stems)
  local running = {}
  for _, rec in ipairs(Jobs.of(proj)) do
    if rec.state ~= "cancelling" then running[tostring(rec.item) .. "/" .. rec.stems] = rec end
  end
  local out, followed = {}, 0
  for _, info in ipairs(items) do
    local rec = running[U.item_guid(info.item) .. "/" .. stems]
    if rec then
      U.console(string.format("%s is being split into %d stems already: following that split",
        rec.name, stems))
      followed = followed + 1
    else
      out[#out + 1] = info
    end
  end
  return out, followed
end

--- Split every selected item of the active project into `stems` stems (2, 4, 5 or 6).
--- Returns the number of jobs started.
function S.split_selected(stems)
  local proj = reaper.EnumProjects(-1)
  local names = C.STEMS[stems]
  local items, skipped = selected_items(proj)
  Jobs.scan_projects()
  local followed
  items, followed = not_running(proj, items, stems)
  if #items == 0 and followed > 0 then return 0 end
  if #items == 0 and #skipped == 0 and Jobs.saved_count(proj) > 0 then
    U.console("nothing selected: following the splits saved in this project")
    return 0
  end
  if #items == 0 then
    U.alert("Select one or more audio items to split into stems."
      .. (#skipped > 0 and ("\n\nSkipped:\n" .. table.concat(skipped, "\n")) or ""))
    return 0
  end
  if #skipped > 0 then
    U.console("skipped " .. #skipped .. " item(s):\n  " .. table.concat(skipped, "\n  "))
  end
  local recs = {}
  local next_index = {}  -- source track -> where its next folder goes
  reaper.Undo_BeginBlock2(proj)
  reaper.PreventUIRefresh(1)
  for _, info in ipairs(items) do
    local tr = reaper.GetMediaItem_Track(info.item)
    local number = math.floor(reaper.GetMediaTrackInfo_Value(tr, "IP_TRACKNUMBER"))
    local at = number + (next_index[tr] or 0)
    local rec = { id = U.new_id(), file = info.file, stems = stems, names = names,
                  geom = info.geom, item = U.item_guid(info.item), name = info.name,
                  model = U.get_setting("model"), state = "new" }
    local after
    rec.tracks, after = T.insert_tracks(proj, at, info.name, names)
    next_index[tr] = after - math.floor(reaper.GetMediaTrackInfo_Value(tr, "IP_TRACKNUMBER"))
    rec.start_at = start_at(proj, info.geom)
    Jobs.adopt(proj, rec)
    P.refresh_gaps(rec)
    if U.flag("mute_original") then
      reaper.SetMediaItemInfo_Value(info.item, "B_MUTE", 1)
      rec.muted_source = true
    end
    recs[#recs + 1] = rec
  end
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  reaper.Undo_EndBlock2(proj, string.format("stembridge: split %d item(s) to stems", #recs), -1)
  for _, rec in ipairs(recs) do
    local ok, code, err = E.submit(rec)
    if ok then
      Jobs.save(rec)
    else
      Jobs.fail(rec, code, err)
    end
  end
  return #recs
end

--- The split actions: split the selection, then follow the jobs. A relaunch of a running
--- action terminates it and runs it again (REAPER's set_action_options 1|2): the jobs are
--- saved in the project, so the new instance follows them on.
function S.split_action(stems)
  if reaper.set_action_options then reaper.set_action_options(1 | 2) end  -- REAPER >= 7.03
  S.split_selected(stems)
  if not Mon.run_monitor() then
    -- Another script's monitor follows the jobs: this one shows its own failures now.
    local failures = Jobs.failures()
    if #failures > 0 then U.alert("A split failed:\n\n" .. table.concat(failures, "\n\n")) end
  end
end

return S
