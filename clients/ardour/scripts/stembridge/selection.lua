-- stembridge for Ardour, stage "selection": what a split action does at once for each
-- selected region: checks it (an audio region whose file exists), records the job
-- (source geometry in session samples, the playhead as the engine's start), writes the
-- request and starts the engine. The stem tracks follow once the engine accepted the
-- job (Ardour's Lua cannot remove a track again, so nothing is made before that), from
-- the follow hook. Loaded by core.lua; returns Sel.

local U, C, Jobs, E, T, Mon = ...

local Sel = {}

--- The record for one region, or nil and a message saying what to do.
local function record_of(region, stems)
  local name = region:name()
  if region:data_type():to_string() ~= "audio" then
    return nil, name .. " is a MIDI region: stembridge splits audio regions only."
  end
  local ar = region:to_audioregion()
  local fs = region:source(0):to_filesource()
  if ar:isnil() or fs:isnil() then
    return nil, name .. " has no audio file behind it (bounce it to a file first)."
  end
  local file = fs:path()
  if not U.exists(file) then
    return nil, "The file of " .. name .. " cannot be read: " .. file
      .. "\nFind the missing file (Session > Clean-up, or re-import it) and try again."
  end
  local track = T.track_of(region)
  if not track then return nil, name .. " is not on a track." end
  local rate = Session:nominal_sample_rate()
  local src = { position = region:position():samples(), start = region:start():samples(),
                length = region:length():samples() }
  local playhead = Session:transport_sample()
  local at = src.start
  if playhead >= src.position and playhead < src.position + src.length then
    at = src.start + playhead - src.position
  end
  local names = C.STEMS[stems]
  local rec = { id = Jobs.new_id(), name = name, file = file, region = T.id_of(region),
                track = T.id_of(track), stems = stems, names = names,
                channels = math.min(ar:n_channels(), 2), src = src, rate = rate,
                gain = ar:scale_amplitude(), start_at = at / rate, created = U.now(),
                state = "new" }
  return rec
end

--- Start a split of every region in `regions` (an Ardour RegionList or a Lua array).
--- Returns the records started and the messages of those refused (also shown).
function Sel.split(regions, stems)
  local list = {}
  if type(regions) == "table" then list = regions
  else for r in regions:iter() do list[#list + 1] = r end end
  local started, messages = {}, {}
  if #list == 0 then
    messages[1] = "Select one or more audio regions first."
  end
  for _, region in ipairs(list) do
    local rec, why = record_of(region, stems)
    if rec then
      local ok, code, message = E.submit(rec)
      if ok then
        Jobs.save(rec)
        started[#started + 1] = rec
      else
        rec.state, rec.error = "failed", { code = code, message = message }
        Jobs.save(rec)
        messages[#messages + 1] = message
      end
    else
      messages[#messages + 1] = why
    end
  end
  if #messages > 0 then U.message(table.concat(messages, "\n\n")) end
  return started, messages
end

return Sel
