-- @noindex
-- stembridge for REAPER, stage "jobs": the job records. Each is saved as JSON in its
-- project (ProjExtState "stembridge", key "job:<id>"), so a monitor that was stopped, or
-- a REAPER that was restarted, adopts them again; the ones this monitor follows, in
-- order; and the end of a job that cannot go on (`fail`). Loaded by stembridge_core.lua
-- with the util, JSON, constants, tracks and placement stages; returns the table Jobs.
--
-- A record (saved): id, state, file, stems, names, model, geom {pos, len, offs, rate,
-- item, take}, tracks {folder guid, stem -> guid}, item guid, request/reply paths, job
-- id, job folder, manifest path, out folder, finals, error {code, message}.
-- In memory only (keys starting with "_", and proj): the placed regions' source ranges,
-- the next manifest region to place, the last poll time, the last manifest text and value.
-- States: new, submitting, cancelling, running, swapped, done, failed, cancelled.

local U, J, C, T, P = ...

local Jobs = {}

local live = {}      -- id -> record, for every job the monitor follows
local order = {}     -- ids in the order they were adopted
local failures = {}  -- messages to show once, together

function Jobs.save(rec)
  local keep = {}
  for k, v in pairs(rec) do
    if k ~= "proj" and k:sub(1, 1) ~= "_" then keep[k] = v end
  end
  reaper.SetProjExtState(rec.proj, U.EXT, "job:" .. rec.id, J.encode(keep))
end

--- Stop following a record in this monitor (it stays saved in its project).
function Jobs.unfollow(id)
  live[id] = nil
  for i, o in ipairs(order) do
    if o == id then table.remove(order, i) break end
  end
end

--- Stop following a record and delete it from its project.
function Jobs.forget(rec)
  reaper.SetProjExtState(rec.proj, U.EXT, "job:" .. rec.id, "")
  Jobs.unfollow(rec.id)
end

--- Follow `rec`. A record read back from the project (`resumed`) had its regions placed
--- by an earlier monitor: they are placed again from the manifest.
function Jobs.adopt(proj, rec, resumed)
  if live[rec.id] then return end
  rec.proj = proj
  rec._next, rec._ranges = 0, {}
  live[rec.id] = rec
  order[#order + 1] = rec.id
  if resumed and (rec.state == "running" or rec.state == "submitting") then
    P.delete_items(rec, "^region:")
    P.refresh_gaps(rec)
  end
end

--- Adopt the saved jobs of every open project that the monitor does not follow yet.
function Jobs.scan_projects()
  for _, proj in ipairs(U.projects()) do
    local i = 0
    while true do
      local ok, key, val = reaper.EnumProjExtState(proj, U.EXT, i)
      if not ok then break end
      -- (keys may come back upper-cased: ids are lower-case hex)
      local id = key:lower():match("^job:(%x+)$")
      if id and val ~= "" and not live[id] then
        local rec = J.decode(val)
        if type(rec) == "table" and rec.id then Jobs.adopt(proj, rec, true) end
      end
      i = i + 1
    end
  end
end

--- The record followed under `id`, or nil.
function Jobs.get(id) return live[id] end

--- The ids followed, in adoption order (a copy: records may be dropped meanwhile).
function Jobs.ids() return { table.unpack(order) } end

--- How many records this monitor follows.
function Jobs.count() return #order end

--- A job that cannot go on: its tracks are removed (one undo point) and the record
--- forgotten; the message (`code` a wire code, C.ERRORS) waits to be shown (`failures`).
function Jobs.fail(rec, code, message)
  if rec.state == "failed" or rec.state == "cancelled" then return end
  local cancelled = code == C.ERRORS.CANCELLED
  rec.state = cancelled and "cancelled" or "failed"
  rec.error = { code = code, message = message }
  T.remove_tracks(rec, "stembridge: remove unfinished stems")
  if cancelled then
    U.console(string.format("cancelled the split of %s", rec.name))
  else
    failures[#failures + 1] = string.format("%s: %s", rec.name, message)
  end
  Jobs.forget(rec)
end

--- The failure messages not shown yet (and none are left).
function Jobs.failures()
  local out = failures
  failures = {}
  return out
end

return Jobs
