-- @noindex
-- stembridge for REAPER: the shared library of the action scripts (Lua 5.4).
--
-- How a split works (PROTOCOL.md, "Files: the data plane" and "Request files"):
--   1. `split_selected` reads the selected audio items, inserts a folder of stem tracks
--      under each item's track with one "separating..." item per stem aligned with the
--      source item (one undo point), writes a JSON request file per item and launches
--      `stembridge submit --request FILE` WITHOUT waiting (ExecProcess, no shell; no file
--      name of the user's ever goes on a command line).
--   2. The monitor (one `reaper.defer` loop per REAPER, with a time budget per tick) polls
--      each request's reply file, then the job's manifest.json, and places every finalized
--      region as an item that plays exactly the audio the source item plays there.
--   3. When the job is done it moves the consolidated stem files to the output folder and
--      replaces the region items by one item per stem with the source item's geometry.
-- Jobs are saved in the project (ProjExtState "stembridge"), so a monitor that was
-- stopped, or a REAPER that was restarted, picks them up again where they were.

local M = {}

M.EXT = "stembridge"              -- ExtState / ProjExtState section
M.BUDGET = 0.008                  -- seconds of work per defer tick
M.POLL = 0.1                      -- seconds between two reads of one job's files
M.LAUNCH_TIMEOUT = 20.0           -- seconds for `stembridge submit` to show it runs
M.ACCEPT_TIMEOUT = 120.0          -- seconds for the engine to accept (includes starting it)

--- Stem names per stem count, in track order (engine/stems.py: a test checks they agree).
M.STEMS = {
  [2] = { "vocals", "instrumental" },
  [4] = { "vocals", "drums", "bass", "other" },
  [6] = { "vocals", "drums", "bass", "other", "guitar", "piano" },
}

M.DEFAULTS = {
  engine = "stembridge",          -- the stembridge command, or a python with stembridge
  model = "",                     -- "" = the engine's default for the stem count
  device = "auto",                -- engine device when the engine is started: auto|cpu|cuda|mps
  output_dir = "",                -- "" = the project's media folder
  folder_track = "1",
  mute_original = "1",
  colors = "vocals=#E0533F;drums=#E8A33A;bass=#4D8FE0;other=#8FBF4A;guitar=#B265D6;"
    .. "piano=#3FB8B0;instrumental=#8C8C8C",
}

-- Item and take properties copied from the source item to every stem item, so that the
-- stems play exactly what the source plays (fades, gain, pitch, channel mode).
local ITEM_PARMS = { "D_VOL", "B_LOOPSRC", "D_SNAPOFFSET", "D_FADEINLEN", "D_FADEOUTLEN",
  "D_FADEINDIR", "D_FADEOUTDIR", "C_FADEINSHAPE", "C_FADEOUTSHAPE", "D_FADEINLEN_AUTO",
  "D_FADEOUTLEN_AUTO" }
local TAKE_PARMS = { "D_PLAYRATE", "D_PITCH", "B_PPITCH", "I_PITCHMODE", "D_VOL", "D_PAN",
  "I_CHANMODE" }

local J

--------------------------------------------------------------------------- utilities

local function now() return reaper.time_precise() end

local function console(text) reaper.ShowConsoleMsg("stembridge: " .. text .. "\n") end

local function alert(text) reaper.MB(text, "stembridge", 0) end

local windows  -- (GetOS asked once)
local function is_windows()
  if windows == nil then windows = reaper.GetOS():find("^Win") ~= nil end
  return windows
end

local function join(a, b)
  if a:sub(-1) == "/" or a:sub(-1) == "\\" then return a .. b end
  return a .. (is_windows() and "\\" or "/") .. b
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

--- Write a file atomically: a temporary name in the same folder, then rename.
local function write_file_atomic(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return false, err end
  f:write(text)
  f:close()
  os.remove(path) -- Windows cannot rename over an existing file
  local ok, rerr = os.rename(tmp, path)
  if not ok then return false, rerr end
  return true
end

--- A name safe on every file system (item names become folder names).
local function safe_name(name)
  name = (name or ""):gsub('[%c<>:"/\\|?*]', "_"):gsub("^[%s%.]+", ""):gsub("[%s%.]+$", "")
  if name == "" then name = "item" end
  return name:sub(1, 80)
end

local function new_id()
  local guid = reaper.genGuid("")
  return (guid:gsub("[^%x]", ""):lower():sub(1, 16))
end

--------------------------------------------------------------------------- settings

function M.get_setting(key)
  if reaper.HasExtState(M.EXT, key) then return reaper.GetExtState(M.EXT, key) end
  return M.DEFAULTS[key]
end

function M.set_setting(key, value)
  reaper.SetExtState(M.EXT, key, tostring(value), true)
end

local function flag(key) return M.get_setting(key) == "1" end

--- {stem -> native color | 0} from the colors setting ("vocals=#RRGGBB;...").
function M.stem_colors()
  local out = {}
  for stem, hex in M.get_setting("colors"):gmatch("(%w+)%s*=%s*#?(%x%x%x%x%x%x)") do
    local r, g, b = tonumber(hex:sub(1, 2), 16), tonumber(hex:sub(3, 4), 16),
      tonumber(hex:sub(5, 6), 16)
    out[stem] = reaper.ColorToNative(r, g, b) | 0x1000000
  end
  return out
end

--------------------------------------------------------------------------- the engine

--- The argument list that runs the engine's CLI with `args`.
local function engine_argv(args)
  local engine = M.get_setting("engine")
  local argv = { engine }
  local base = engine:match("[^/\\]+$") or engine
  if base:lower():match("^python[%d%.]*w?%.?e?x?e?$") then
    argv[#argv + 1] = "-m"
    argv[#argv + 1] = "bridge"
  end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return argv
end

--- A command line for ExecProcess: every argument quoted; none may contain a quote.
--- Only the engine path (a setting) and paths this script made are ever passed.
local function command_line(argv)
  local parts = {}
  for i, a in ipairs(argv) do
    if a:find('"', 1, true) or a:find("[%c]") then
      return nil, string.format("argument %d (%s) contains a quote or control character", i, a)
    end
    parts[i] = '"' .. a .. '"'
  end
  return table.concat(parts, " ")
end

--- Launch the engine CLI in the background (never waits). Returns true or nil, message.
local function launch(args)
  local cmd, err = command_line(engine_argv(args))
  if not cmd then return nil, err end
  local engine = M.get_setting("engine")
  if engine:find("[/\\]") and not reaper.file_exists(engine) then
    return nil, "there is no file " .. engine
  end
  -- No wait: REAPER returns at once. Whether the program runs shows in its reply file
  -- (a bare command name that is not on REAPER's PATH times out with a clear message).
  reaper.ExecProcess(cmd, is_windows() and -2 or -1)
  return true
end

local function engine_missing_message()
  local cmd = command_line(engine_argv({ "submit" })) or M.get_setting("engine")
  return "The stembridge engine did not start (" .. cmd .. ").\n"
    .. "Install it (see the stembridge README: pip install stembridge) and set the path to "
    .. "the stembridge command (or to the Python that has it) in stembridge: Settings."
end

local function spool_dir()
  local dir = join(join(reaper.GetResourcePath(), "Data"), "stembridge")
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

--------------------------------------------------------------------------- projects

local function projects()
  local out, i = {}, 0
  while true do
    local proj = reaper.EnumProjects(i)
    if not proj then return out end
    out[#out + 1] = proj
    i = i + 1
  end
end

local function find_track(proj, guid)
  for i = 0, reaper.CountTracks(proj) - 1 do
    local tr = reaper.GetTrack(proj, i)
    if reaper.GetTrackGUID(tr) == guid then return tr end
  end
end

local function item_guid(item)
  return select(2, reaper.GetSetMediaItemInfo_String(item, "GUID", "", false))
end

local function item_tag(item)
  return select(2, reaper.GetSetMediaItemInfo_String(item, "P_EXT:stembridge", "", false))
end

local function find_item(proj, guid)
  for t = 0, reaper.CountTracks(proj) - 1 do
    local tr = reaper.GetTrack(proj, t)
    for i = 0, reaper.CountTrackMediaItems(tr) - 1 do
      local it = reaper.GetTrackMediaItem(tr, i)
      if item_guid(it) == guid then return it end
    end
  end
end

--------------------------------------------------------------------------- job records

-- A job record (saved as JSON in the project): id, state, file, stems, names, model,
-- geom {pos, len, offs, rate, item, take}, tracks {folder guid, stem -> guid}, item guid,
-- request/reply paths, job id, job folder, manifest path, out folder, finals, error.
-- In memory only (keys starting with "_", and proj): the placed regions' source ranges,
-- the next manifest region to place, the last poll time, the last manifest text and value.

local live = {}      -- id -> record, for every job the monitor follows
local order = {}     -- ids in the order they were adopted

local function save(rec)
  local keep = {}
  for k, v in pairs(rec) do
    if k ~= "proj" and k:sub(1, 1) ~= "_" then keep[k] = v end
  end
  reaper.SetProjExtState(rec.proj, M.EXT, "job:" .. rec.id, J.encode(keep))
end

--- Stop following a record in this monitor (it stays saved in its project).
local function unfollow(id)
  live[id] = nil
  for i, o in ipairs(order) do
    if o == id then table.remove(order, i) break end
  end
end

--- Stop following a record and delete it from its project.
local function forget(rec)
  reaper.SetProjExtState(rec.proj, M.EXT, "job:" .. rec.id, "")
  unfollow(rec.id)
end

local refresh_gaps, delete_items  -- (placement, below)

--- Follow `rec`. A record read back from the project (`resumed`) had its regions placed
--- by an earlier monitor: they are placed again from the manifest.
local function adopt(proj, rec, resumed)
  if live[rec.id] then return end
  rec.proj = proj
  rec._next, rec._ranges = 0, {}
  live[rec.id] = rec
  order[#order + 1] = rec.id
  if resumed and (rec.state == "running" or rec.state == "submitting") then
    delete_items(rec, "^region:")
    refresh_gaps(rec)
  end
end

--- Adopt the saved jobs of every open project that the monitor does not follow yet.
local function scan_projects()
  for _, proj in ipairs(projects()) do
    local i = 0
    while true do
      local ok, key, val = reaper.EnumProjExtState(proj, M.EXT, i)
      if not ok then break end
      -- (keys may come back upper-cased: ids are lower-case hex)
      local id = key:lower():match("^job:(%x+)$")
      if id and val ~= "" and not live[id] then
        local rec = J.decode(val)
        if type(rec) == "table" and rec.id then adopt(proj, rec, true) end
      end
      i = i + 1
    end
  end
end

--------------------------------------------------------------------------- placement

--- The stem tracks of a record: {stem -> MediaTrack} (missing ones left out).
local function stem_tracks(rec)
  local out = {}
  for _, stem in ipairs(rec.names) do
    local guid = rec.tracks[stem]
    local tr = rec._tr and rec._tr[stem]
    if not (tr and reaper.ValidatePtr2(rec.proj, tr, "MediaTrack*")) then
      tr = guid and find_track(rec.proj, guid)
    end
    if tr then out[stem] = tr end
  end
  rec._tr = out
  return out
end

--- Project time of source-file time `s` (seconds) for the record's geometry.
local function project_time(g, s) return g.pos + (s - g.offs) / g.rate end

local function apply_parms(item, take, g)
  for k, v in pairs(g.item) do reaper.SetMediaItemInfo_Value(item, k, v) end
  if take then
    for k, v in pairs(g.take) do reaper.SetMediaItemTakeInfo_Value(take, k, v) end
  end
end

local peaks = {}     -- {proj, take, src} whose peaks are being built

local FADE_IN = { D_FADEINLEN = 0, D_FADEINLEN_AUTO = -1 }
local FADE_OUT = { D_FADEOUTLEN = 0, D_FADEOUTLEN_AUTO = -1 }

--- An item on `tr` playing `path` from `startoffs` (source seconds) at project time `pos`
--- for `len` seconds, with the source item's properties; its fades only where it starts
--- or ends with the source item.
local function add_source_item(rec, tr, path, pos, len, startoffs, tag, name)
  local g = rec.geom
  local item = reaper.AddMediaItemToTrack(tr)
  local take = reaper.AddTakeToMediaItem(item)
  local src = reaper.PCM_Source_CreateFromFile(path)
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

local function add_gap_item(rec, tr, pos, len)
  local item = reaper.AddMediaItemToTrack(tr)
  reaper.SetMediaItemInfo_Value(item, "D_POSITION", pos)
  reaper.SetMediaItemInfo_Value(item, "D_LENGTH", len)
  reaper.GetSetMediaItemInfo_String(item, "P_NOTES", "stembridge: separating...", true)
  reaper.GetSetMediaItemInfo_String(item, "P_EXT:stembridge", rec.id .. ":gap", true)
  return item
end

--- Delete this record's items on its stem tracks whose tag matches `pattern`.
function delete_items(rec, pattern)
  for _, tr in pairs(stem_tracks(rec)) do
    for i = reaper.CountTrackMediaItems(tr) - 1, 0, -1 do
      local it = reaper.GetTrackMediaItem(tr, i)
      local tag = item_tag(it)
      if tag:sub(1, #rec.id + 1) == rec.id .. ":" and tag:sub(#rec.id + 2):find(pattern) then
        reaper.DeleteTrackMediaItem(tr, it)
      end
    end
  end
end

--- Re-create the "separating..." items over the parts not yet final, per stem.
function refresh_gaps(rec)
  delete_items(rec, "^gap$")
  local g = rec.geom
  local visible_end = g.pos + g.len
  local spans = {}
  for _, r in ipairs(rec._ranges) do
    local a, b = project_time(g, r[1]), project_time(g, r[2])
    spans[#spans + 1] = { math.max(a, g.pos), math.min(b, visible_end) }
  end
  table.sort(spans, function(x, y) return x[1] < y[1] end)
  local t = g.pos
  local gaps = {}
  for _, s in ipairs(spans) do
    if s[1] > t + 1e-9 then gaps[#gaps + 1] = { t, s[1] } end
    t = math.max(t, s[2])
  end
  if visible_end > t + 1e-9 then gaps[#gaps + 1] = { t, visible_end } end
  for _, tr in pairs(stem_tracks(rec)) do
    for _, gap in ipairs(gaps) do add_gap_item(rec, tr, gap[1], gap[2] - gap[1]) end
  end
end

--- Place one finalized region (frames [start, end) at `sr`) on every stem track, clipped
--- to the part of the source the item shows.
local function place_region(rec, region, sr)
  local g = rec.geom
  local a, b = region.start / sr, region["end"] / sr
  local t0 = math.max(project_time(g, a), g.pos)
  local t1 = math.min(project_time(g, b), g.pos + g.len)
  rec._ranges[#rec._ranges + 1] = { a, b }
  if t1 <= t0 + 1e-9 then return end
  local tracks = stem_tracks(rec)
  for _, stem in ipairs(rec.names) do
    local rel = region.files and region.files[stem]
    if tracks[stem] and type(rel) == "string" then
      local path = join(rec.folder, rel)
      local startoffs = (t0 - g.pos) * g.rate + g.offs - a
      add_source_item(rec, tracks[stem], path, t0, t1 - t0, startoffs,
        string.format("%s:region:%d", rec.id, region.start), stem)
    end
  end
end

--------------------------------------------------------------------------- tracks

--- Insert the folder and stem tracks for `item` directly under `src_track`, at index
--- `at` (0-based). Returns {folder guid or nil, stem -> guid}, index after the last one.
local function insert_tracks(proj, at, name, names)
  local colors = M.stem_colors()
  local out = {}
  local with_folder = flag("folder_track")
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
local function remove_tracks(rec, undo)
  reaper.Undo_BeginBlock2(rec.proj)
  reaper.PreventUIRefresh(1)
  local tracks = stem_tracks(rec)
  for _, stem in ipairs(rec.names) do
    if tracks[stem] then reaper.DeleteTrack(tracks[stem]) end
  end
  local folder = rec.tracks.folder and find_track(rec.proj, rec.tracks.folder)
  if folder then reaper.DeleteTrack(folder) end
  if rec.muted_source then
    local item = find_item(rec.proj, rec.item)
    if item then reaper.SetMediaItemInfo_Value(item, "B_MUTE", 0) end
  end
  reaper.PreventUIRefresh(-1)
  reaper.Undo_EndBlock2(rec.proj, undo, -1)
  reaper.UpdateArrange()
end

--------------------------------------------------------------------------- the source

--- What to separate for an item: {file, geom, name} or nil, reason.
function M.describe_item(proj, item)
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

--------------------------------------------------------------------------- submitting

local fail, stop_job  -- (following, below)

local function submit(rec)
  local dir = spool_dir()
  rec.request = join(dir, rec.id .. ".json")
  rec.reply = join(dir, rec.id .. ".reply.json")
  os.remove(rec.reply)
  local body = { source = rec.file, stems = rec.stems, start_at = rec.start_at,
                 device = M.get_setting("device"), priority = "interactive",
                 client = "reaper" }
  if rec.model ~= "" then body.model = rec.model end
  local ok, err = write_file_atomic(rec.request, J.encode(body))
  if not ok then return nil, "cannot write " .. rec.request .. ": " .. tostring(err) end
  ok, err = launch({ "submit", "--request", rec.request })
  if not ok then return nil, engine_missing_message() .. "\n(" .. err .. ")" end
  rec.state, rec._launched = "submitting", now()
  return true
end

--- Split every selected item of the active project into `stems` stems (2, 4 or 6).
--- Returns the number of jobs started.
function M.split_selected(stems)
  local proj = reaper.EnumProjects(-1)
  local names = M.STEMS[stems]
  local items, skipped = {}, {}
  for i = 0, reaper.CountSelectedMediaItems(proj) - 1 do
    local item = reaper.GetSelectedMediaItem(proj, i)
    local info, why = M.describe_item(proj, item)
    if info then
      info.item = item
      items[#items + 1] = info
    else
      skipped[#skipped + 1] = string.format("item %d: %s", i + 1, why)
    end
  end
  if #items == 0 and #skipped == 0 and reaper.EnumProjExtState(proj, M.EXT, 0) then
    console("nothing selected: following the splits saved in this project")
    return 0
  end
  if #items == 0 then
    alert("Select one or more audio items to split into stems."
      .. (#skipped > 0 and ("\n\nSkipped:\n" .. table.concat(skipped, "\n")) or ""))
    return 0
  end
  if #skipped > 0 then
    console("skipped " .. #skipped .. " item(s):\n  " .. table.concat(skipped, "\n  "))
  end
  local recs = {}
  local next_index = {}  -- source track -> where its next folder goes
  reaper.Undo_BeginBlock2(proj)
  reaper.PreventUIRefresh(1)
  for _, info in ipairs(items) do
    local tr = reaper.GetMediaItem_Track(info.item)
    local at = math.floor(reaper.GetMediaTrackInfo_Value(tr, "IP_TRACKNUMBER")) + (next_index[tr] or 0)
    local rec = { id = new_id(), file = info.file, stems = stems, names = names,
                  geom = info.geom, item = item_guid(info.item), name = info.name,
                  model = M.get_setting("model"), state = "new" }
    local after
    rec.tracks, after = insert_tracks(proj, at, info.name, names)
    next_index[tr] = after - math.floor(reaper.GetMediaTrackInfo_Value(tr, "IP_TRACKNUMBER"))
    rec.start_at = start_at(proj, info.geom)
    adopt(proj, rec)
    refresh_gaps(rec)
    if flag("mute_original") then
      reaper.SetMediaItemInfo_Value(info.item, "B_MUTE", 1)
      rec.muted_source = true
    end
    recs[#recs + 1] = rec
  end
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  reaper.Undo_EndBlock2(proj, string.format("stembridge: split %d item(s) to stems", #recs), -1)
  for _, rec in ipairs(recs) do
    local ok, err = submit(rec)
    if ok then
      save(rec)
    else
      fail(rec, "not_found", err)
    end
  end
  return #recs
end

--- The split actions: split the selection, then follow the jobs. A relaunch of a running
--- action terminates it and runs it again (REAPER's set_action_options 1|2): the jobs are
--- saved in the project, so the new instance follows them on.
function M.split_action(stems)
  if reaper.set_action_options then reaper.set_action_options(1 | 2) end  -- REAPER >= 7.03
  M.split_selected(stems)
  M.run_monitor()
end

--------------------------------------------------------------------------- following

local failures = {}  -- messages to show once, together

--- A job that cannot go on: its tracks are removed (one undo point), the message shown.
function fail(rec, code, message)
  if rec.state == "failed" or rec.state == "cancelled" then return end
  rec.state = code == "cancelled" and "cancelled" or "failed"
  rec.error = { code = code, message = message }
  remove_tracks(rec, "stembridge: remove unfinished stems")
  if code == "cancelled" then
    console(string.format("cancelled the split of %s", rec.name))
  else
    failures[#failures + 1] = string.format("%s: %s", rec.name, message)
  end
  forget(rec)
end

local HINTS = {
  not_running = "Is the engine installed? Set its path in stembridge: Settings.",
  start_failed = "The engine could not start; see its server.log.",
  model_missing = "Install the model: stembridge models fetch NAME (needs internet once), "
    .. "or choose another model in stembridge: Settings.",
}

--- An engine error's message, with what to do for the codes that need it.
local function with_hint(code, message)
  local hint = HINTS[code]
  return tostring(message) .. (hint and ("\n" .. hint) or "")
end

--- The request and its reply are read: delete both.
local function drop_request(rec)
  os.remove(rec.reply)
  os.remove(rec.request)
end

local function poll_reply(rec)
  local reply = J.decode(read_file(rec.reply) or "")
  if type(reply) ~= "table" then
    rec._launched = rec._launched or now()
    if now() - rec._launched > (tonumber(M.get_setting("launch_timeout")) or M.LAUNCH_TIMEOUT) then
      fail(rec, "not_found", engine_missing_message())
    end
    return
  end
  if reply.state == "accepted" then
    rec.job, rec.folder, rec.manifest = reply.job, reply.folder, reply.manifest
    rec.state = "running"
    drop_request(rec)
    save(rec)
  elseif reply.state == "error" then
    drop_request(rec)
    fail(rec, reply.code or "error", with_hint(reply.code, reply.message))
  elseif now() - (rec._launched or now()) > M.ACCEPT_TIMEOUT then
    fail(rec, "timeout", "The engine did not accept the job within "
      .. math.floor(M.ACCEPT_TIMEOUT) .. " s. Is it running? Try: stembridge ping")
  end
end

--- Move (or, across disks, copy) a finished stem file into the output folder.
local function move_file(src, dst)
  if os.rename(src, dst) then return true end
  local fin, err = io.open(src, "rb")
  if not fin then return nil, err end
  local part = dst .. ".part"
  local fout, oerr = io.open(part, "wb")
  if not fout then fin:close() return nil, oerr end
  while true do
    local block = fin:read(1 << 20)
    if not block then break end
    fout:write(block)
  end
  fin:close()
  fout:close()
  local ok, rerr = os.rename(part, dst)
  if not ok then return nil, rerr end
  os.remove(src)
  return true
end

local function output_folder(rec)
  local base = M.get_setting("output_dir")
  if base == "" then base = reaper.GetProjectPathEx(rec.proj) end
  local name = safe_name(rec.name) .. " stems"
  local dir, n = join(base, name), 1
  while reaper.file_exists(join(dir, rec.names[1] .. ".wav")) do
    n = n + 1
    dir = join(base, string.format("%s (%d)", name, n))
  end
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

--- The job is done: stems into the output folder, one item per stem like the source.
--- Spread over ticks within the budget (`rec._more` asks to be called again): moves one
--- stem at a time, swaps all items at once (state "swapped", saved), then deletes the
--- region files no item uses any more.
local function finish(rec, manifest, deadline)
  if not rec.out then
    rec.out = output_folder(rec)
    save(rec)
  end
  rec.finals = rec.finals or {}
  for _, stem in ipairs(rec.names) do
    if not rec.finals[stem] then
      if now() > deadline then rec._more = true return end
      local rel = manifest.final and manifest.final[stem]
      local dst = join(rec.out, stem .. ".wav")
      if not reaper.file_exists(dst) then
        local ok, err = move_file(join(rec.folder, rel or (stem .. ".wav")), dst)
        if not ok then
          fail(rec, "output_failed", "Cannot write " .. dst .. ": " .. tostring(err)
            .. "\nChoose another output folder in stembridge: Settings.")
          return
        end
      end
      rec.finals[stem] = dst
      save(rec)
    end
  end
  if rec.state ~= "swapped" then
    local g = rec.geom
    reaper.PreventUIRefresh(1)
    delete_items(rec, "^region:")
    delete_items(rec, "^gap$")
    for stem, tr in pairs(stem_tracks(rec)) do
      add_source_item(rec, tr, rec.finals[stem], g.pos, g.len, g.offs, rec.id .. ":final", stem)
    end
    reaper.PreventUIRefresh(-1)
    reaper.UpdateArrange()
    rec.state = "swapped"
    save(rec)
    rec._more = true
    return
  end
  -- The region files are no longer used by any item.
  rec._unused = rec._unused or {}
  if not rec._listed then
    for _, r in ipairs(manifest.regions or {}) do
      for _, rel in pairs(r.files or {}) do rec._unused[#rec._unused + 1] = rel end
    end
    rec._listed = true
  end
  while #rec._unused > 0 do
    if now() > deadline then rec._more = true return end
    os.remove(join(rec.folder, table.remove(rec._unused)))
  end
  rec.state = "done"
  local meta = manifest.metadata or {}
  console(string.format("%s: %d stems in %s (%s %s on %s%s)", rec.name, #rec.names, rec.out,
    tostring(meta.model_name or "?"), tostring(meta.model_version or ""),
    tostring(meta.device or "?"), meta.cache_hit and ", from the cache" or ""))
  local warnings = type(meta.warnings) == "table" and meta.warnings or {}
  for _, w in ipairs(warnings) do console(rec.name .. ": warning: " .. tostring(w)) end
  forget(rec)
end

local function poll_manifest(rec, deadline)
  local text = read_file(rec.manifest)
  if not text then
    if rec.folder and not reaper.file_exists(rec.folder) then
      fail(rec, "input_missing", "The job folder " .. rec.folder .. " disappeared.")
    end
    return
  end
  if text == rec._text and not rec._more then return end
  local m = rec._m
  if text ~= rec._text then
    local err
    m, err = J.decode(text)
    if type(m) ~= "table" then
      console("ignoring an unreadable manifest (" .. tostring(err) .. ")")
      return
    end
    rec._text, rec._m = text, m
  end
  if m.state == "failed" or m.state == "cancelled" then
    local e = type(m.error) == "table" and m.error or {}
    fail(rec, e.code or m.state, with_hint(e.code, e.message or m.state))
    return
  end
  local sr = tonumber(m.samplerate)
  local regions = m.regions or {}
  local changed = false
  rec._more = false
  if sr and sr > 0 and rec.state == "running" then
    for i = rec._next + 1, #regions do
      if now() > deadline then rec._more = true break end
      place_region(rec, regions[i], sr)
      rec._next = i
      changed = true
    end
  end
  if changed then
    refresh_gaps(rec)
    reaper.UpdateArrange()
  end
  if m.state == "done" and not rec._more then finish(rec, m, deadline) end
end

local function build_peaks(deadline)
  local i = 1
  while i <= #peaks and now() < deadline do
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

--- Tell the engine to stop a record's job and forget it; a job not accepted yet is
--- cancelled as soon as it is (state "cancelling").
function stop_job(rec)
  if rec.job then
    launch({ "cancel", rec.job })
    forget(rec)
  elseif rec.state == "submitting" then
    rec.state = "cancelling"
    save(rec)
  else
    forget(rec)
  end
end

--- Cancel a record: its tracks go at once (one undo point); the engine is told to stop
--- (a job not accepted yet is cancelled as soon as it is).
function M.cancel_record(rec)
  if rec.state == "cancelling" then return end
  remove_tracks(rec, "stembridge: cancel split")
  console(string.format("cancelled the split of %s", rec.name))
  stop_job(rec)
end

local function poll_cancelling(rec)
  local reply = J.decode(read_file(rec.reply) or "")
  local waited = now() - (rec._launched or now())
  if type(reply) == "table" and reply.state == "accepted" then
    launch({ "cancel", reply.job })
  elseif not (type(reply) == "table" and reply.state == "error")
      and waited < M.ACCEPT_TIMEOUT then
    return
  end
  drop_request(rec)
  forget(rec)
end

local function tick_record(rec, deadline)
  if now() - (rec._polled or 0) < M.POLL and not rec._more then return end
  rec._polled = now()
  if (rec.state == "submitting" or rec.state == "running") and next(stem_tracks(rec)) == nil then
    -- The user deleted the stem tracks (or undid the split): stop the job.
    console(string.format("the stem tracks of %s are gone: cancelling its split", rec.name))
    stop_job(rec)
    return
  end
  if rec.state == "submitting" then
    poll_reply(rec)
  elseif rec.state == "cancelling" then
    poll_cancelling(rec)
  elseif rec.state == "running" or rec.state == "swapped" then
    poll_manifest(rec, deadline)
  end
end

--------------------------------------------------------------------------- the monitor

local last_scan, last_cancel = -1, nil

local function cancel_all()
  for _, id in ipairs({ table.unpack(order) }) do
    if live[id] then M.cancel_record(live[id]) end
  end
end

--- One monitor tick: returns false when nothing is left to follow.
function M.tick()
  local t0 = now()
  local deadline = t0 + M.BUDGET
  reaper.SetExtState(M.EXT, "monitor", string.format("%.3f", t0), false)
  if t0 - last_scan > 0.25 then
    scan_projects()
    last_scan = t0
  end
  local cancel = reaper.GetExtState(M.EXT, "cancel")
  if last_cancel == nil then last_cancel = cancel end
  if cancel ~= last_cancel then
    last_cancel = cancel
    cancel_all()
  end
  for _, id in ipairs({ table.unpack(order) }) do
    if now() > deadline then break end
    local rec = live[id]
    if rec then
      if not reaper.ValidatePtr(rec.proj, "ReaProject*") then
        unfollow(id)  -- its project was closed: it is saved there, and resumes on reopen
      else
        tick_record(rec, deadline)
      end
    end
  end
  build_peaks(deadline)
  if #failures > 0 then
    local text = table.concat(failures, "\n\n")
    failures = {}
    alert("A split failed:\n\n" .. text)
  end
  return #order > 0 or #peaks > 0
end

--- True if another script's monitor ticked within the last second.
function M.monitor_alive()
  local beat = tonumber(reaper.GetExtState(M.EXT, "monitor"))
  return beat ~= nil and now() - beat < 1.0
end

local function loop()
  if M.tick() then
    reaper.defer(loop)
  else
    reaper.DeleteExtState(M.EXT, "monitor", false)
  end
end

--- Follow every job of every open project in a defer loop, unless a monitor runs.
function M.run_monitor()
  if M.monitor_alive() then return false end
  scan_projects()
  reaper.atexit(function() reaper.DeleteExtState(M.EXT, "monitor", false) end)
  last_cancel = reaper.GetExtState(M.EXT, "cancel")
  loop()
  return true
end

--- The "Cancel running splits" action: the running monitor (in whichever script runs
--- it) is told through ExtState; without one, this script cancels and follows up.
function M.cancel_action()
  if M.monitor_alive() then
    reaper.SetExtState(M.EXT, "cancel", string.format("%.6f", now()), false)
    return
  end
  scan_projects()
  if #order == 0 then console("no split is running") end
  cancel_all()
  M.run_monitor()
end

--------------------------------------------------------------------------- settings UI

local FIELDS = {
  { key = "model", caption = "Model (empty: default for the stem count)" },
  { key = "device", caption = "Device: auto/cpu/cuda/mps" },
  { key = "output_dir", caption = "Output folder (empty: project media)" },
  { key = "folder_track", caption = "Folder track (y/n)", yn = true },
  { key = "mute_original", caption = "Mute the original item (y/n)", yn = true },
  { key = "colors", caption = "Stem colors (stem=#RRGGBB;...)" },
  { key = "engine", caption = "Engine: stembridge command or python" },
}
local DEVICES = { auto = true, cpu = true, cuda = true, mps = true }

--- Check the dialog's answers; returns {key -> value} or nil, a message saying what to fix.
function M.parse_settings(csv)
  local values, i = {}, 0
  for v in (csv .. "|"):gmatch("([^|]*)|") do
    i = i + 1
    values[i] = v:match("^%s*(.-)%s*$")
  end
  if i ~= #FIELDS then return nil, "Expected " .. #FIELDS .. " values." end
  local out = {}
  for n, f in ipairs(FIELDS) do
    local v = values[n]
    if f.yn then
      local yn = v:lower():sub(1, 1)
      if yn ~= "y" and yn ~= "n" and yn ~= "1" and yn ~= "0" then
        return nil, f.caption .. ": answer y or n."
      end
      v = (yn == "y" or yn == "1") and "1" or "0"
    end
    if v:find('"', 1, true) then return nil, f.caption .. ": no quotes, please." end
    out[f.key] = v
  end
  if not DEVICES[out.device] then return nil, "Device: one of auto, cpu, cuda, mps." end
  if out.engine == "" then return nil, "Engine: give the stembridge command or a path to it." end
  if out.model ~= "" and not out.model:match("^[%w_%-%.]+$") then
    return nil, "Model: a model name such as htdemucs (see: stembridge models list)."
  end
  for item in (out.colors .. ";"):gmatch("([^;]*);") do
    if item:match("%S") and not item:match("^%s*%w+%s*=%s*#?%x%x%x%x%x%x%s*$") then
      return nil, "Stem colors: write them as vocals=#E0533F;drums=#E8A33A (not " .. item .. ")."
    end
  end
  return out
end

--- The Settings action: one dialog (REAPER's GetUserInputs); invalid answers are
--- explained and asked again; Cancel changes nothing.
function M.settings_dialog()
  local captions, current = {}, {}
  for i, f in ipairs(FIELDS) do
    captions[i] = f.caption
    local v = M.get_setting(f.key)
    if f.yn then v = v == "1" and "y" or "n" end
    current[i] = v
  end
  local csv = table.concat(current, "|")
  while true do
    local ok, answer = reaper.GetUserInputs("stembridge settings", #FIELDS,
      table.concat(captions, ",") .. ",separator=|,extrawidth=250", csv)
    if not ok then return false end
    local values, err = M.parse_settings(answer)
    if values then
      for k, v in pairs(values) do M.set_setting(k, v) end
      return true
    end
    if reaper.MB(err .. "\n\nEdit the settings again?", "stembridge settings", 4) ~= 6 then
      return false
    end
    csv = answer
  end
end

--- Load the library's helpers from its folder (the action scripts call this first).
function M.init(dir)
  J = dofile(join(dir, "stembridge_json.lua"))
  M.json = J
  return M
end

M._internal = { command_line = command_line, engine_argv = engine_argv, safe_name = safe_name }

return M
