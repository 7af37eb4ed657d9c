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
-- An ended job leaves a short record "ended:<id>" (Jobs.ended), the newest KEEP_ENDED per
-- project, so that tracks an undo or redo brings back are recognised (stage "history").

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

Jobs.KEEP_ENDED = 32  -- ended records kept per project (for undo and redo), newest
Jobs.ended_version = 0  -- counts the ended records written (the history stage re-reads)

--- The saved values of `proj` under keys "<prefix><id>": {id -> decoded value}.
local function saved(proj, prefix)
  local out, i = {}, 0
  while true do
    local ok, key, val = reaper.EnumProjExtState(proj, U.EXT, i)
    if not ok then return out end
    -- (keys may come back upper-cased: ids are lower-case hex)
    local id = key:lower():match("^" .. prefix .. "(%x+)$")
    if id and val ~= "" then
      local rec = J.decode(val)
      if type(rec) == "table" then out[id] = rec end
    end
    i = i + 1
  end
end

--- The ended jobs of `proj` (what an undo or redo may bring back): {id -> record}.
--- Each holds id, state (done, failed, cancelled), name, names, tracks, item,
--- muted_source, geom, finals, out and t (os.time() when it ended).
function Jobs.ended(proj) return saved(proj, "ended:") end

--- How many unfinished jobs `proj` holds.
function Jobs.saved_count(proj)
  local n = 0
  for _ in pairs(saved(proj, "job:")) do n = n + 1 end
  return n
end

local function keep_ended(rec)
  local state = rec.state == "done" and "done" or rec.state == "failed" and "failed"
    or "cancelled"
  local ended = { id = rec.id, state = state, name = rec.name, names = rec.names,
                  tracks = rec.tracks, item = rec.item, muted_source = rec.muted_source,
                  geom = rec.geom, finals = rec.finals, out = rec.out, t = os.time() }
  reaper.SetProjExtState(rec.proj, U.EXT, "ended:" .. rec.id, J.encode(ended))
  Jobs.ended_version = Jobs.ended_version + 1
  local all = {}
  for id, e in pairs(Jobs.ended(rec.proj)) do all[#all + 1] = { id = id, t = e.t or 0 } end
  table.sort(all, function(x, y) return x.t > y.t or (x.t == y.t and x.id > y.id) end)
  for i = Jobs.KEEP_ENDED + 1, #all do
    reaper.SetProjExtState(rec.proj, U.EXT, "ended:" .. all[i].id, "")
  end
end

--- Stop following a record and delete it from its project; what an undo or redo needs
--- to recognise its tracks stays (Jobs.ended).
function Jobs.forget(rec)
  reaper.SetProjExtState(rec.proj, U.EXT, "job:" .. rec.id, "")
  if rec.tracks and rec.names then keep_ended(rec) end
  Jobs.unfollow(rec.id)
end

--- The followed records of `proj`.
function Jobs.of(proj)
  local out = {}
  for _, id in ipairs(order) do
    if live[id] and live[id].proj == proj then out[#out + 1] = live[id] end
  end
  return out
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
    for id, rec in pairs(saved(proj, "job:")) do
      if not live[id] and rec.id then
        local ok, err = pcall(Jobs.adopt, proj, rec, true)
        if not ok then Jobs.broken(rec, err) end
      end
    end
  end
end

--- A record that raised an error (a bad saved record, a REAPER call that failed): its
--- job ends with a message saying what to do, and nothing of it is left to fail again.
function Jobs.broken(rec, err)
  local message = "stembridge stopped following this split: " .. tostring(err)
    .. "\nDelete its stem tracks and split the item again; if it happens again, please "
    .. "report it with this message."
  rec.name = rec.name or rec.id
  if not pcall(Jobs.fail, rec, C.ERRORS.INTERNAL, message) then
    failures[#failures + 1] = string.format("%s: %s", tostring(rec.name), message)
    reaper.SetProjExtState(rec.proj, U.EXT, "job:" .. tostring(rec.id), "")
    Jobs.unfollow(rec.id)
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
  local ok, err = pcall(T.remove_tracks, rec, "stembridge: remove unfinished stems")
  if not ok then message = message .. "\n(its tracks could not be removed: " .. tostring(err)
    .. "; delete them by hand)" end
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
