-- stembridge for Ardour, stage "monitor": one step of following every job of the
-- session, called from the follow hook on Ardour's 100 ms timer (LuaTimerDS) with a
-- time budget, so the GUI never waits: polls each request's reply file, makes the stem
-- tracks once the engine accepted the job, places each finalized region of the job's
-- manifest (from the playhead on, as the engine computes them), and at the end swaps
-- the pieces for one region per stem in one undoable command. Loaded by core.lua with
-- util, constants, jobs, engine, tracks and placement; returns Mon.

local U, C, Jobs, E, T, P = ...

local Mon = {}

Mon.BUDGET = 0.008  -- seconds of work per timer tick

local function mark(rec, event)
  rec.events = rec.events or {}
  if not rec.events[event] then rec.events[event] = U.now() - rec.created end
end

--- The job cannot go on: say why, take its tracks out of the way, forget it.
function Mon.fail(rec, code, message)
  rec.state, rec.error = "failed", { code = code, message = message }
  T.retire(rec)
  Jobs.save(rec)
  U.message("Splitting " .. rec.name .. " failed:\n" .. message)
end

local function on_accepted(rec)
  local ok, err = T.create(rec)
  mark(rec, "tracks")
  if not ok then
    E.cancel(rec.job)
    Mon.fail(rec, C.ERRORS.INTERNAL, err)
    return
  end
  rec.state = "running"
  mark(rec, "accepted")
  Jobs.save(rec)
end

--- Place every region of the manifest not placed yet (within the deadline).
local function place_regions(rec, manifest, deadline)
  rec.placed = rec.placed or {}
  local ratio = rec.rate / (manifest.samplerate or rec.rate)
  for i = #rec.placed + 1, #(manifest.regions or {}) do
    if U.now() > deadline then return false end
    local region = manifest.regions[i]
    local entry = { start = region.start, ["end"] = region["end"], at = U.now() - rec.created,
                    pieces = {} }
    local geom = P.piece(rec.src, region.start, region["end"], ratio)
    for _, stem in ipairs(rec.names) do
      local file = region.files and region.files[stem]
      if geom and file then
        local piece = { file = U.join(rec.folder, file), position = geom.position,
                        start = geom.start, length = geom.length }
        local made = P.make_quiet(rec.tracks[stem], piece.file, geom, rec.gain)
        if made then piece.region = T.id_of(made) end
        entry.pieces[stem] = piece
      end
    end
    rec.placed[i] = entry
    if geom then mark(rec, "first_region") end
  end
  return true
end

--- The job is done: one region per stem over the whole span, pieces removed, one undo.
local function finish(rec, manifest)
  rec.final = {}
  local geom = P.whole(rec.src)
  local made_all = {}
  for _, stem in ipairs(rec.names) do
    local rel = manifest.final and manifest.final[stem] or (stem .. ".wav")
    local entry = { file = U.join(rec.folder, rel), position = geom.position,
                    start = geom.start, length = geom.length }
    local made = P.make_quiet(rec.tracks[stem], entry.file, geom, rec.gain)
    if made then
      entry.region = T.id_of(made)
      made_all[rec.tracks[stem]] = made
    end
    rec.final[stem] = entry
  end
  if Editor then P.swap(made_all) end
  rec.state = "done"
  mark(rec, "done")
  Jobs.save(rec)
end

local function step(rec, deadline)
  if rec.state == "cancelling" then
    local status = E.poll_reply(rec)
    if status ~= "waiting" then
      E.cancel(rec.job)
      rec.state = "cancelled"
      Jobs.save(rec)
    end
    return
  end
  if rec.state == "submitting" then
    local status, code, message = E.poll_reply(rec)
    if status == "accepted" then on_accepted(rec)
    elseif not status then Mon.fail(rec, code, message) end
    return
  end
  if rec.state ~= "running" then return end
  local manifest = E.manifest(rec)
  if not manifest then return end
  local complete = place_regions(rec, manifest, deadline)
  Jobs.save(rec)
  if not complete then return end
  if manifest.state == "done" then
    finish(rec, manifest)
  elseif manifest.state == "failed" or manifest.state == "cancelled" then
    local err = manifest.error or {}
    local code = err.code or C.ERRORS.INTERNAL
    Mon.fail(rec, code, E.with_hint(code, err.message or manifest.state))
  end
end

--- One timer tick: follow every active job for at most `budget` seconds.
--- Returns the number of jobs still active.
function Mon.tick(budget)
  local deadline = U.now() + (budget or Mon.BUDGET)
  local active = Jobs.active()
  for _, rec in ipairs(active) do
    rec.launched = rec.launched or U.now()
    step(rec, deadline)
    if U.now() > deadline then break end
  end
  return #Jobs.active()
end

--- Stop every job of the session: the engine is told, the stem tracks are retired.
function Mon.cancel_all()
  local n = 0
  for _, rec in ipairs(Jobs.active()) do
    if rec.job then E.cancel(rec.job) end
    rec.error = { code = C.ERRORS.CANCELLED, message = "cancelled" }
    -- a job not accepted yet is cancelled as soon as the engine accepts it
    rec.state = rec.state == "submitting" and "cancelling" or "cancelled"
    T.retire(rec)
    Jobs.save(rec)
    n = n + 1
  end
  return n
end

return Mon
