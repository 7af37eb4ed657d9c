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

--- Put `file` on the track `route_id` at `geom`, with the source's gain (GUI only).
--- Returns the region, or nil and why not.
function P.make(route_id, file, geom, gain)
  if not Editor then return nil, "headless" end
  local route = T.route(route_id)
  local track = route and route:to_track()
  if not track or track:isnil() then return nil, "the stem track is gone" end
  local files = C.StringVector()
  files:push_back(file)
  local pos = Temporal.timepos_t(geom.position - geom.start)
  Editor:do_embed(files, Editing.ImportDistinctFiles, Editing.ImportToTrack, pos,
    ARDOUR.PluginInfo(), track)
  local made
  for r in track:playlist():region_list():iter() do
    local fs = r:source(0):to_filesource()
    if not fs:isnil() and fs:path() == file then made = r end
  end
  if not made then return nil, "Ardour did not import " .. file end
  made:to_stateful():clear_changes()
  made:trim_to(Temporal.timepos_t(geom.position), Temporal.timecnt_t(geom.length))
  made:to_audioregion():set_scale_amplitude(gain or 1.0)
  return made
end

--- Replace a stem track's pieces by one region, in the open undo command (GUI only).
function P.swap(route_id, pieces, region)
  local route = T.route(route_id)
  if not route then return end
  local pl = route:to_track():playlist()
  pl:to_stateful():clear_changes()
  for r in pl:region_list():iter() do
    if pieces[T.id_of(r)] then pl:remove_region(r) end
  end
  if region and region:playlist():isnil() then
    pl:add_region(region, region:position(), 1, false)
  end
  Session:add_stateful_diff_command(pl:to_statefuldestructible())
end

return P
