-- stembridge for Ardour, stage "tracks": the stem tracks of a split, one per stem, named
-- after the stem, coloured, placed right under the source track and grouped in a route
-- group named after the region (Ardour's way of keeping tracks together: shared
-- selection, editing and a group tab). Loaded by core.lua with util; returns T.

local U = ...

local T = {}

T.COLORS = { vocals = 0xE0533FFF, drums = 0xE8A33AFF, bass = 0x4F8FE0FF, other = 0x8E6FD8FF,
             instrumental = 0x4FB07AFF, guitar = 0xC9C24AFF, piano = 0x45B8C4FF }

function T.id_of(obj)
  return obj:to_stateful():id():to_s()
end

function T.route(id)
  if not id then return nil end
  local r = Session:route_by_id(PBD.ID(id))
  if r:isnil() then return nil end
  return r
end

--- The track whose playlist holds `region`, or nil.
function T.track_of(region)
  local pl = region:playlist()
  if pl:isnil() then return nil end
  local want = T.id_of(pl)
  for t in Session:get_tracks():iter() do
    local tr = t:to_track()
    if not tr:isnil() and T.id_of(tr:playlist()) == want then return tr end
  end
  return nil
end

--- "<region> stems", or " 2", " 3"... where a route group of that name exists (one
--- group per split: a group shares states such as active between its tracks).
local function group_name(base)
  local taken = {}
  for g in Session:route_groups():iter() do taken[g:name()] = true end
  local name, n = base, 1
  while taken[name] do
    n = n + 1
    name = string.format("%s %d", base, n)
  end
  return name
end

--- Make the stem tracks of `rec` (rec.names, rec.channels) under its source track,
--- named "<region> <stem>" (Ardour keeps track names unique).
--- Sets rec.tracks = {stem = route id} and rec.group (the route group's name).
function T.create(rec)
  local src = T.route(rec.track)
  local order = src and (src:presentation_info_ptr():order() + 1) or ARDOUR.PresentationInfo.max_order
  local group = Session:new_route_group(group_name(rec.name .. " stems"))
  rec.tracks = {}
  for i, stem in ipairs(rec.names) do
    local list = Session:new_audio_track(rec.channels, 2, nil, 1, rec.name .. " " .. stem,
      order + i - 1,
      ARDOUR.TrackMode.Normal, true)
    if list:size() ~= 1 then return nil, "Ardour could not add the track " .. stem end
    local track = list:front()
    track:presentation_info_ptr():set_color(T.COLORS[stem] or 0x9A9A9AFF)
    if group then group:add(track) end
    rec.tracks[stem] = T.id_of(track)
  end
  if group then
    group:set_rgba(T.COLORS[rec.names[1]] or 0x9A9A9AFF)
    rec.group = group:name()
  end
  return true
end

--- Take the stem tracks out of the way after a failure or a cancel: Ardour's Lua cannot
--- remove a route (no binding in Ardour 7), so they are emptied and deactivated
--- (greyed out; Track > Remove removes them).
function T.retire(rec)
  for _, id in pairs(rec.tracks or {}) do
    local route = T.route(id)
    if route then
      local track = route:to_track()
      if not track:isnil() then
        local pl, regions = track:playlist(), {}
        for r in pl:region_list():iter() do regions[#regions + 1] = r end
        for _, r in ipairs(regions) do pl:remove_region(r) end
      end
      route:set_active(false, nil)
    end
  end
end

return T
