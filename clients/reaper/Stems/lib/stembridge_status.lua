-- @noindex
-- stembridge for REAPER, stage "status": what the monitor tells the status window, and
-- what the window asks of it, through REAPER's ExtState (not persisted; the window is
-- another script, with a Lua state of its own). Loaded by stembridge_core.lua with the
-- util, JSON and jobs stages; returns the table St.
--
--   ExtState "status":      JSON array, one object per job the monitor follows and that
--                           is not over: {id, name, stems, state, percent (0..100 or
--                           absent), eta (seconds left, or absent), model, device};
--                           rewritten only when it changes, at most every EVERY seconds.
--   ExtState "cancel_jobs": ids the window wants cancelled, separated by spaces; the
--                           monitor takes them (and clears the key) on its next tick.

local U, J, Jobs = ...

local St = {}

St.EVERY = 0.25        -- seconds between two looks at what the window shows
St.KEY = "status"
St.CANCEL_KEY = "cancel_jobs"

local SHOWN = { new = true, submitting = true, running = true, cancelling = true }

--- The model a job runs: the engine's answer (manifest: request, then metadata) or the
--- one asked for; "default" when none was named.
local function model_of(rec)
  local m = type(rec._m) == "table" and rec._m or {}
  local meta = type(m.metadata) == "table" and m.metadata or {}
  local req = type(m.request) == "table" and m.request or {}
  local model = meta.model or req.model or rec.model
  if type(model) ~= "string" or model == "" then return "default" end
  return model
end

--- The device: the engine's (manifest metadata, when it says) or the one asked for.
local function device_of(rec)
  local m = type(rec._m) == "table" and rec._m or {}
  local meta = type(m.metadata) == "table" and m.metadata or {}
  local device = meta.device or rec.device
  if type(device) ~= "string" or device == "" then return "auto" end
  return device
end

--- The rows for the window, in the order the monitor adopted the jobs.
function St.rows()
  local rows = {}
  for _, id in ipairs(Jobs.ids()) do
    local rec = Jobs.get(id)
    if rec and SHOWN[rec.state] then
      rows[#rows + 1] = {
        id = rec.id, name = tostring(rec.name or "?"), stems = rec.stems, state = rec.state,
        percent = rec.progress and math.floor(rec.progress * 100) or nil,
        eta = rec._eta, model = model_of(rec), device = device_of(rec) }
    end
  end
  return rows
end

local last_text, last_look = nil, -math.huge

--- Publish the rows if they changed (at most every EVERY seconds, or at once: `now`).
function St.publish(now)
  local t = U.now()
  if not now and t - last_look < St.EVERY then return end
  last_look = t
  local text = J.encode(St.rows())
  if text == last_text then return end
  last_text = text
  reaper.SetExtState(U.EXT, St.KEY, text, false)
end

--- The monitor stops: nothing is running any more.
function St.clear()
  last_text = nil
  reaper.DeleteExtState(U.EXT, St.KEY, false)
end

--- The ids the window asked to cancel since the last call (the request is taken).
function St.take_cancels()
  local text = reaper.GetExtState(U.EXT, St.CANCEL_KEY)
  if text == "" then return nil end
  reaper.DeleteExtState(U.EXT, St.CANCEL_KEY, false)
  local ids = {}
  for id in text:gmatch("%S+") do ids[#ids + 1] = id end
  return ids
end

--- The window asks the monitor to cancel job `id`.
function St.ask_cancel(id)
  local text = reaper.GetExtState(U.EXT, St.CANCEL_KEY)
  reaper.SetExtState(U.EXT, St.CANCEL_KEY, (text == "" and "" or text .. " ") .. id, false)
end

--- What the monitor published: the rows (an empty list when nothing runs), and the text.
function St.read(previous_text, previous_rows)
  local text = reaper.GetExtState(U.EXT, St.KEY)
  if text == previous_text then return previous_rows, text end
  local rows = J.decode(text)
  if type(rows) ~= "table" then rows = {} end
  return rows, text
end

return St
