-- @noindex
-- stembridge for REAPER, stage "placement": the items on the stem tracks. A finalized
-- region becomes one item per stem that plays exactly the audio the source item plays
-- there (geometry, fades, item and take properties); "separating..." items cover the
-- parts not final yet; peaks are built over the defer ticks. Loaded by
-- stembridge_core.lua with the util and tracks stages; returns the table P.
--
-- A record's geometry `geom` (seconds): pos, len (project time of the item), offs (source
-- time at the item's start), rate (playrate), item/take {parameter -> value}.

local U, T = ...

local P = {}

local peaks = {}     -- {proj, take, src} whose peaks are being built

local FADE_IN = { D_FADEINLEN = 0, D_FADEINLEN_AUTO = -1 }
local FADE_OUT = { D_FADEOUTLEN = 0, D_FADEOUTLEN_AUTO = -1 }

--- Project time of source-file time `s` (seconds) for the record's geometry.
local function project_time(g, s) return g.pos + (s - g.offs) / g.rate end

local function apply_parms(item, take, g)
  for k, v in pairs(g.item) do reaper.SetMediaItemInfo_Value(item, k, v) end
  if take then
    for k, v in pairs(g.take) do reaper.SetMediaItemTakeInfo_Value(take, k, v) end
  end
end

--- An item on `tr` playing `path` from `startoffs` (source seconds) at project time `pos`
--- for `len` seconds, with the source item's properties; its fades only where it starts
--- or ends with the source item. Returns the item, or nil and what failed (the file
--- cannot be opened, or REAPER refused an item or take: nothing is left behind).
function P.add_source_item(rec, tr, path, pos, len, startoffs, tag, name)
  local g = rec.geom
  local src = reaper.PCM_Source_CreateFromFile(path)
  if not src then return nil, "REAPER cannot open " .. path end
  local item = reaper.AddMediaItemToTrack(tr)
  local take = item and reaper.AddTakeToMediaItem(item)
  if not take then
    if item then reaper.DeleteTrackMediaItem(tr, item) end
    reaper.PCM_Source_Destroy(src)
    return nil, "REAPER did not add an item for " .. path
  end
  local placeholder = reaper.GetMediaItemTake_Source(take)
  reaper.SetMediaItemTake_Source(take, src)
  if placeholder then reaper.PCM_Source_Destroy(placeholder) end  -- ours to destroy
  apply_parms(item, take, g)
  if pos > g.pos + 1e-9 then
    for k, v in pairs(FADE_IN) do reaper.SetMediaItemInfo_Value(item, k, v) end
  end
  if pos + len < g.pos + g.len - 1e-9 then
    for k, v in pairs(FADE_OUT) do reaper.SetMediaItemInfo_Value(item, k, v) end
  end
  reaper.SetMediaItemInfo_Value(item, "D_POSITION", pos)
  reaper.SetMediaItemInfo_Value(item, "D_LENGTH", len)
  reaper.SetMediaItemTakeInfo_Value(take, "D_STARTOFFS", startoffs)
  reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", name, true)
  reaper.GetSetMediaItemInfo_String(item, "P_EXT:stembridge", tag, true)
  if reaper.PCM_Source_BuildPeaks(src, 0) ~= 0 then
    peaks[#peaks + 1] = { proj = rec.proj, take = take, src = src }
  end
  reaper.UpdateItemInProject(item)
  return item
end

--- The text of the "separating..." items: "stembridge: separating..." and, once the
--- monitor knows it, the progress (`rec._progress`).
local function gap_text(rec)
  return "stembridge: separating..." .. (rec._progress and (" " .. rec._progress) or "")
end

local function add_gap_item(rec, tr, pos, len)
  local item = reaper.AddMediaItemToTrack(tr)
  if not item then return nil end
  reaper.SetMediaItemInfo_Value(item, "D_POSITION", pos)
  reaper.SetMediaItemInfo_Value(item, "D_LENGTH", len)
  reaper.GetSetMediaItemInfo_String(item, "P_NOTES", gap_text(rec), true)
  reaper.GetSetMediaItemInfo_String(item, "P_EXT:stembridge", rec.id .. ":gap", true)
  return item
end

--- Delete this record's items on its stem tracks whose tag matches `pattern`.
function P.delete_items(rec, pattern)
  for _, tr in pairs(T.stem_tracks(rec)) do
    for _, it in ipairs(P.items_of(rec, tr, pattern)) do reaper.DeleteTrackMediaItem(tr, it) end
  end
end

--- This record's items on `tr` whose tag matches `pattern` (after "<id>:").
function P.items_of(rec, tr, pattern)
  local out = {}
  for i = 0, reaper.CountTrackMediaItems(tr) - 1 do
    local it = reaper.GetTrackMediaItem(tr, i)
    local tag = U.item_tag(it)
    if tag:sub(1, #rec.id + 1) == rec.id .. ":" and tag:sub(#rec.id + 2):find(pattern) then
      out[#out + 1] = it
    end
  end
  return out
end

--- The parts of the item [g.pos, g.pos + g.len] (project seconds) that no range of
--- `ranges` (source seconds) covers, in order; never outside the item, never empty.
function P.gaps(g, ranges)
  local item_end = g.pos + g.len
  local spans = {}
  for _, r in ipairs(ranges) do
    local a = math.max(project_time(g, r[1]), g.pos)
    local b = math.min(project_time(g, r[2]), item_end)
    if b > a + 1e-9 then spans[#spans + 1] = { a, b } end
  end
  table.sort(spans, function(x, y) return x[1] < y[1] end)
  local t, out = g.pos, {}
  for _, s in ipairs(spans) do
    if s[1] > t + 1e-9 then out[#out + 1] = { t, s[1] } end
    t = math.max(t, s[2])
  end
  if item_end > t + 1e-9 then out[#out + 1] = { t, item_end } end
  return out
end

--- Re-create the "separating..." items over the parts not yet final, per stem.
function P.refresh_gaps(rec)
  P.delete_items(rec, "^gap$")
  local gaps = P.gaps(rec.geom, rec._ranges)
  for _, tr in pairs(T.stem_tracks(rec)) do
    for _, gap in ipairs(gaps) do add_gap_item(rec, tr, gap[1], gap[2] - gap[1]) end
  end
  rec._gaps = #gaps
end

--- Show `text` (e.g. "42 % - 0:35 left") on the record's "separating..." items.
function P.show_progress(rec, text)
  rec._progress = text
  local notes = gap_text(rec)
  for _, tr in pairs(T.stem_tracks(rec)) do
    for _, it in ipairs(P.items_of(rec, tr, "^gap$")) do
      reaper.GetSetMediaItemInfo_String(it, "P_NOTES", notes, true)
    end
  end
end

--- Place one finalized region (frames [start, end) at `sr` Hz) on every stem track,
--- clipped to the part of the source the item shows. Returns true, or nil and what
--- failed.
function P.place_region(rec, region, sr)
  local g = rec.geom
  local a, b = region.start / sr, region["end"] / sr
  local t0 = math.max(project_time(g, a), g.pos)
  local t1 = math.min(project_time(g, b), g.pos + g.len)
  rec._ranges[#rec._ranges + 1] = { a, b }
  if t1 <= t0 + 1e-9 then return true end
  local tracks = T.stem_tracks(rec)
  for _, stem in ipairs(rec.names) do
    local rel = region.files and region.files[stem]
    if tracks[stem] and type(rel) == "string" then
      local path = U.join(rec.folder, rel)
      local startoffs = (t0 - g.pos) * g.rate + g.offs - a
      local item, err = P.add_source_item(rec, tracks[stem], path, t0, t1 - t0, startoffs,
        string.format("%s:region:%d", rec.id, region.start), stem)
      if not item then return nil, err end
    end
  end
  rec._placed = (rec._placed or 0) + 1
  return true
end

--- Put the final stem files (`rec.finals`, stem -> path) on the stem tracks as one
--- "<id>:final" item each with the source item's geometry, in place of whatever items
--- of the record are there. Returns true, or nil and what failed.
function P.place_finals(rec)
  local g = rec.geom
  P.delete_items(rec, "")
  for stem, tr in pairs(T.stem_tracks(rec)) do
    local item, err = P.add_source_item(rec, tr, rec.finals[stem], g.pos, g.len, g.offs,
      rec.id .. ":final", stem)
    if not item then return nil, err end
  end
  return true
end

--- Build the pending peaks until `deadline` (seconds of the precise clock).
function P.build_peaks(deadline)
  local i = 1
  while i <= #peaks and U.now() < deadline do
    local p = peaks[i]
    if reaper.ValidatePtr2(p.proj, p.take, "MediaItem_Take*")
        and reaper.GetMediaItemTake_Source(p.take) == p.src then
      if reaper.PCM_Source_BuildPeaks(p.src, 1) == 0 then
        reaper.PCM_Source_BuildPeaks(p.src, 2)
        table.remove(peaks, i)
        reaper.UpdateArrange()
      else
        i = i + 1
      end
    else
      table.remove(peaks, i)
    end
  end
end

--- How many sources still have their peaks built.
function P.pending_peaks() return #peaks end

return P
