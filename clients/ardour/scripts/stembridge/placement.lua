-- stembridge for Ardour, stage "placement": where a stem's audio goes. The geometry is
-- pure arithmetic on session samples; putting a region on a track needs a source made
-- from a file, which Ardour 7's Lua can only do in the GUI (Editor:do_embed): headless
-- (ardour-lua) each placement is planned and recorded, not made. Loaded by core.lua with
-- util and tracks; returns P.
--
-- Units: `src` = {position, start, length} of the source region, session samples;
-- manifest frames are at the source file's rate; ratio = session rate / file rate.

local U, T = ...

local P = {}

local function round(x) return math.floor(x + 0.5) end

--- The piece of the region file [a, b) (file frames) that plays inside the source
--- region: {position, start (into the region file), length}, session samples; nil when
--- the region lies outside the source region.
function P.piece(src, a, b, ratio)
  local lo = math.max(round(a * ratio), src.start)
  local hi = math.min(round(b * ratio), src.start + src.length)
  if hi <= lo then return nil end
  return { position = src.position + lo - src.start, start = lo - round(a * ratio),
           length = hi - lo }
end

--- The final region over the whole span: the stem file plays like the source file.
function P.whole(src)
  return { position = src.position, start = src.start, length = src.length }
end

--- The region on any track whose first source is `file`, and its playlist.
local function find_region(file)
  for t in Session:get_tracks():iter() do
    local pl = t:to_track():playlist()
    for r in pl:region_list():iter() do
      local fs = r:source(0):to_filesource()
      if not fs:isnil() and fs:path() == file then return r, pl end
    end
  end
  return nil
end

--- Make `route` the editor's selected track (where Editor:do_embed puts a file: Ardour 7
--- ignores the track it is given). Returns true when it could.
local function select_track(route)
  return pcall(function()
    local sl = ArdourUI.SelectionList()
    sl:push_back(Editor:rtav_from_route(route):to_timeaxisview())
    Editor:set_selection(sl, ArdourUI.SelectionOp.Set)
  end)
end

--- Put `file` on the track `route_id` at `geom`, with the source's gain (GUI only).
--- The track is selected first, so that the embed lands there; should it land elsewhere
--- the new region is found wherever it is and moved.
--- Returns the region, or nil and why not.
function P.make(route_id, file, geom, gain)
  if not Editor then return nil, "headless" end
  local route = T.route(route_id)
  local track = route and route:to_track()
  if not track or track:isnil() then return nil, "the stem track is gone" end
  select_track(route)
  local files = C.StringVector()
  files:push_back(file)
  local pos = Temporal.timepos_t(geom.position - geom.start)
  Editor:do_embed(files, Editing.ImportDistinctFiles, Editing.ImportToTrack, pos,
    ARDOUR.PluginInfo(), track)
  local made, where = find_region(file)
  if not made then return nil, "Ardour did not import " .. file end
  local pl = track:playlist()
  if T.id_of(where) ~= T.id_of(pl) then
    where:remove_region(made)
    pl:add_region(made, pos, 1, false)
  end
  made:trim_to(Temporal.timepos_t(geom.position), Temporal.timecnt_t(geom.length))
  made:to_audioregion():set_scale_amplitude(gain or 1.0)
  return made
end

--- Make a region outside the undo history: the embed's own undo step is dropped
--- (pieces come and go while the job runs; only the final swap is one undo step).
function P.make_quiet(route_id, file, geom, gain)
  if not Editor then return nil, "headless" end
  Session:begin_reversible_command("stembridge: place")
  local made, err = P.make(route_id, file, geom, gain)
  Session:abort_reversible_command()
  return made, err
end

--- The job is done: each stem track ends up with its one final region, as one undo
--- step whose undo empties the stem tracks (the pieces and the final region are taken
--- off first, outside the history, then the final region goes back on under a
--- StatefulDiffCommand). `finals` = {route id = region}.
function P.swap(finals)
  Session:begin_reversible_command("stembridge: split to stems")
  for route_id, region in pairs(finals) do
    local route = T.route(route_id)
    if route then
      local pl = route:to_track():playlist()
      local old = {}
      for r in pl:region_list():iter() do old[#old + 1] = r end
      for _, r in ipairs(old) do pl:remove_region(r) end
      pl:to_stateful():clear_changes()
      pl:add_region(region, region:position(), 1, false)
      Session:add_stateful_diff_command(pl:to_statefuldestructible())
    end
  end
  Session:commit_reversible_command(nil)
end

return P
