-- @noindex
-- stembridge for REAPER, stage "monitor": one `reaper.defer` loop per REAPER, with a
-- time budget per tick, follows every job of every open project: polls each request's
-- reply file, then the job's manifest.json, places every finalized region, and when the
-- job is done moves the stem files to the output folder and swaps the region items for
-- one item per stem; cancelling (the Cancel action, or the stem tracks deleted). Loaded
-- by stembridge_core.lua with the util, JSON, constants, tracks, placement, jobs and
-- engine, history and status stages; returns the table Mon. It publishes the running
-- jobs for the status window and takes the window's cancel requests (stage "status").

local U, J, C, T, P, Jobs, E, H, St = ...

local Mon = {}

Mon.BUDGET = 0.008                -- seconds of work per defer tick
Mon.POLL = 0.1                    -- seconds between two reads of one job's files

local now = U.now

--------------------------------------------------------------------------- finishing

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

Mon.MARKER = ".stembridge-job"    -- in an output folder a job has reserved: its record id
local reserved = {}               -- output folder -> record id, for this REAPER's jobs

--- Whether `dir` may take the stems of `rec`: reserved by it already, or holding none of
--- its stem files and reserved by no other job (in this REAPER, or by a marker file).
local function free_for(rec, dir)
  if reserved[dir] then return reserved[dir] == rec.id end
  local owner = U.read_file(U.join(dir, Mon.MARKER))
  if owner and owner ~= "" then return owner == rec.id end
  for _, stem in ipairs(rec.names) do
    if reaper.file_exists(U.join(dir, stem .. ".wav")) then return false end
  end
  return true
end

--- Reserve "<output folder>/<item name> stems" (or " (2)", " (3)"... where that one is
--- taken) for `rec`: two jobs never share a folder, even when they finish in the same
--- tick. Returns the folder, or nil and why it cannot be made.
function Mon.output_folder(rec)
  local base = U.get_setting("output_dir")
  if base == "" then base = reaper.GetProjectPathEx(rec.proj) end
  local name = U.safe_name(rec.name) .. " stems"
  local dir, n = U.join(base, name), 1
  while not free_for(rec, dir) do
    n = n + 1
    dir = U.join(base, string.format("%s (%d)", name, n))
  end
  reaper.RecursiveCreateDirectory(dir, 0)
  local ok, err = U.write_file_atomic(U.join(dir, Mon.MARKER), rec.id)
  if not ok then return nil, err end
  reserved[dir] = rec.id
  return dir
end

--- The job is done with its output folder: the reservation goes.
local function release_folder(rec)
  if not rec.out then return end
  reserved[rec.out] = nil
  os.remove(U.join(rec.out, Mon.MARKER))
end

local function output_failed(rec, what, err)
  release_folder(rec)
  Jobs.fail(rec, C.ERRORS.OUTPUT_FAILED, "Cannot write " .. what .. ": " .. tostring(err)
    .. "\nChoose another output folder in stembridge: Settings.")
end

--- What the user learns once when a job is done: where the stems are, and its warnings
--- (clipped input, low sample rate...), in one message.
local notices = {}

local function report_done(rec, meta)
  U.console(string.format("%s: %d stems in %s (%s %s on %s%s)", rec.name, #rec.names, rec.out,
    tostring(meta.model_name or "?"), tostring(meta.model_version or ""),
    tostring(meta.device or "?"), meta.cache_hit and ", from the cache" or ""))
  local warnings = type(meta.warnings) == "table" and meta.warnings or {}
  local lines = {}
  for _, w in ipairs(warnings) do lines[#lines + 1] = "  - " .. tostring(w) end
  if #lines > 0 then
    notices[#notices + 1] = string.format("%s: the stems are in %s, with warnings:\n%s",
      rec.name, rec.out, table.concat(lines, "\n"))
  end
end

--- The job is done: stems into the output folder, one item per stem like the source.
--- Spread over ticks within the budget (`rec._more` asks to be called again): moves one
--- stem at a time, swaps all items at once as one undo point (state "swapped", saved),
--- then deletes the region files no item uses any more.
local function finish(rec, manifest, deadline)
  if not rec.out then
    local out, err = Mon.output_folder(rec)
    if not out then return output_failed(rec, "the output folder", err) end
    rec.out = out
    Jobs.save(rec)
  end
  rec.finals = rec.finals or {}
  for _, stem in ipairs(rec.names) do
    if not rec.finals[stem] then
      if now() > deadline then rec._more = true return end
      local rel = manifest.final and manifest.final[stem]
      local src = U.join(rec.folder, rel or (stem .. ".wav"))
      local dst = U.join(rec.out, stem .. ".wav")
      -- (the destination exists without the source only if this job moved it already
      -- and stopped before saving that: the folder is reserved for it)
      if reaper.file_exists(src) or not reaper.file_exists(dst) then
        if U.is_windows() then os.remove(dst) end
        local ok, err = move_file(src, dst)
        if not ok then return output_failed(rec, dst, err) end
      end
      rec.finals[stem] = dst
      Jobs.save(rec)
    end
  end
  if rec.state ~= "swapped" then
    -- One undo point holds the finished stems: undoing a later edit keeps them.
    reaper.Undo_BeginBlock2(rec.proj)
    reaper.PreventUIRefresh(1)
    local ok, err = P.place_finals(rec)
    reaper.PreventUIRefresh(-1)
    reaper.Undo_EndBlock2(rec.proj, "stembridge: stems of " .. rec.name .. " ready", -1)
    reaper.UpdateArrange()
    if not ok then return output_failed(rec, "the stem items", err) end
    rec.state = "swapped"
    Jobs.save(rec)
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
    os.remove(U.join(rec.folder, table.remove(rec._unused)))
  end
  rec.state = "done"
  release_folder(rec)
  report_done(rec, manifest.metadata or {})
  Jobs.forget(rec)
end

--------------------------------------------------------------------------- following

--- A running (or swapped) record: read its manifest if it changed, place the regions
--- that became final (within the budget), finish when the job is done.
local function poll_manifest(rec, deadline)
  local text = U.read_file(rec.manifest)
  if not text then
    if rec.folder and not reaper.file_exists(rec.folder) then
      Jobs.fail(rec, C.ERRORS.INPUT_MISSING, "The job folder " .. rec.folder .. " disappeared.")
    end
    return
  end
  if text == rec._text and not rec._more then return end
  local m = rec._m
  if text ~= rec._text then
    local err
    m, err = J.decode(text)
    if type(m) ~= "table" then
      U.console("ignoring an unreadable manifest (" .. tostring(err) .. ")")
      return
    end
    rec._text, rec._m = text, m
  end
  if m.state == "failed" or m.state == "cancelled" then
    local e = type(m.error) == "table" and m.error or {}
    local code = e.code
      or (m.state == "cancelled" and C.ERRORS.CANCELLED or C.ERRORS.INTERNAL)
    Jobs.fail(rec, code, E.with_hint(e.code, e.message or m.state))
    return
  end
  local sr = tonumber(m.samplerate)
  local regions = m.regions or {}
  local changed = false
  rec._more = false
  if sr and sr > 0 and rec.state == "running" then
    for i = rec._next + 1, #regions do
      if now() > deadline then rec._more = true break end
      local ok, err = P.place_region(rec, regions[i], sr)
      if not ok then
        Jobs.fail(rec, C.ERRORS.OUTPUT_FAILED, err .. ".\nCheck that the engine's job folder "
          .. "is readable, then split the item again.")
        return
      end
      rec._next = i
      changed = true
    end
  end
  if changed then
    P.refresh_gaps(rec)
    reaper.UpdateArrange()
  end
  if rec.state == "running" then Mon.progress(rec, m) end
  if m.state == "done" and not rec._more then finish(rec, m, deadline) end
end

Mon.PROGRESS_EVERY = 1.0          -- seconds between two progress updates of one job

--- "42 % - 0:35 left" for a running job: the part of its frames final in the manifest,
--- and the time left at the pace seen since this monitor first read it. Shown on its
--- "separating..." items (no undo point), at most every PROGRESS_EVERY seconds.
function Mon.progress(rec, m)
  local frames = tonumber(m.frames)
  if not frames or frames <= 0 then return end
  local t = now()
  if t - (rec._shown or -math.huge) < Mon.PROGRESS_EVERY then return end
  local final = 0
  for _, r in ipairs(m.regions or {}) do
    final = final + math.max(0, (tonumber(r["end"]) or 0) - (tonumber(r.start) or 0))
  end
  local part = math.min(1.0, final / frames)
  rec._first = rec._first or { t = t, part = part }
  local text = string.format("%d %%", math.floor(part * 100))
  local pace = (part - rec._first.part) / (t - rec._first.t)
  rec._eta = nil
  if pace > 0 and part < 1 then
    local left = math.ceil((1 - part) / pace)
    text = text .. string.format(" - %d:%02d left", left // 60, left % 60)
    rec._eta = left
  end
  rec._shown, rec.progress = t, part
  if text ~= rec._progress then P.show_progress(rec, text) end
end

--- Cancel a record: its tracks go at once (one undo point); the engine is told to stop
--- (a job not accepted yet is cancelled as soon as it is).
function Mon.cancel_record(rec)
  if rec.state == "cancelling" then return end
  release_folder(rec)
  T.remove_tracks(rec, "stembridge: cancel split")
  U.console(string.format("cancelled the split of %s", rec.name))
  E.stop_job(rec)
end

local function tick_record(rec, deadline)
  if now() - (rec._polled or 0) < Mon.POLL and not rec._more then return end
  rec._polled = now()
  if (rec.state == "submitting" or rec.state == "running")
      and next(T.stem_tracks(rec)) == nil then
    -- The user deleted the stem tracks (or undid the split): stop the job.
    U.console(string.format("the stem tracks of %s are gone: cancelling its split", rec.name))
    E.stop_job(rec)
    return
  end
  if rec.state == "submitting" then
    E.poll_reply(rec)
  elseif rec.state == "cancelling" then
    E.poll_cancelling(rec)
  elseif rec.state == "running" or rec.state == "swapped" then
    poll_manifest(rec, deadline)
  end
end

--- One record's step, isolated: an error in it (a bad saved record, a REAPER call that
--- failed) ends that job with a message saying what to do; the other jobs go on.
local function step_record(rec, deadline)
  local ok, err = pcall(tick_record, rec, deadline)
  if not ok then
    rec._more = false
    Jobs.broken(rec, err)
  end
end

--------------------------------------------------------------------------- the loop

local last_scan, last_cancel = -1, nil

local function cancel_all()
  for _, id in ipairs(Jobs.ids()) do
    local rec = Jobs.get(id)
    if rec then pcall(Mon.cancel_record, rec) end
  end
end

--- One monitor tick: returns false when nothing is left to follow or watch.
function Mon.tick()
  local t0 = now()
  local deadline = t0 + Mon.BUDGET
  reaper.SetExtState(U.EXT, "monitor", string.format("%.3f", t0), false)
  local scan = t0 - last_scan > 0.25
  if scan then
    Jobs.scan_projects()
    last_scan = t0
  end
  local projects = U.projects()
  H.check(projects, scan)
  local cancel = reaper.GetExtState(U.EXT, "cancel")
  if last_cancel == nil then last_cancel = cancel end
  if cancel ~= last_cancel then
    last_cancel = cancel
    cancel_all()
  end
  local asked = St.take_cancels()  -- the status window's Cancel buttons: those jobs only
  for _, id in ipairs(asked or {}) do
    local rec = Jobs.get(id)
    if rec then pcall(Mon.cancel_record, rec) end
  end
  for _, id in ipairs(Jobs.ids()) do
    if now() > deadline then break end
    local rec = Jobs.get(id)
    if rec then
      if not reaper.ValidatePtr(rec.proj, "ReaProject*") then
        Jobs.unfollow(id)  -- its project was closed: it is saved there, and resumes on reopen
      else
        step_record(rec, deadline)
      end
    end
  end
  P.build_peaks(deadline)
  St.publish(asked ~= nil)
  local busy = Jobs.count() + P.pending_peaks()
  reaper.SetExtState(U.EXT, "busy", tostring(busy), false)
  local failures = Jobs.failures()
  if #failures > 0 then
    U.alert("A split failed:\n\n" .. table.concat(failures, "\n\n"))
  end
  if #notices > 0 then
    local text = table.concat(notices, "\n\n")
    notices = {}
    U.alert(text)
  end
  H.settle(projects)  -- last: every change of this tick is the monitor's own
  return busy > 0 or H.watching(projects)
end

--- True if another script's monitor ticked within the last second.
function Mon.monitor_alive()
  local beat = tonumber(reaper.GetExtState(U.EXT, "monitor"))
  return beat ~= nil and now() - beat < 1.0
end

local function loop()
  if Mon.tick() then
    reaper.defer(loop)
  else
    St.clear()
    reaper.DeleteExtState(U.EXT, "monitor", false)
  end
end

--- Follow every job of every open project in a defer loop, unless a monitor runs.
function Mon.run_monitor()
  if Mon.monitor_alive() then return false end
  Jobs.scan_projects()
  reaper.atexit(function()
    St.clear()
    reaper.DeleteExtState(U.EXT, "monitor", false)
  end)
  last_cancel = reaper.GetExtState(U.EXT, "cancel")
  loop()
  return true
end

--- The "Cancel running splits" action: the running monitor (in whichever script runs
--- it) is told through ExtState; without one, this script cancels and follows up.
function Mon.cancel_action()
  if Mon.monitor_alive() then
    reaper.SetExtState(U.EXT, "cancel", string.format("%.6f", now()), false)
    return
  end
  Jobs.scan_projects()
  if Jobs.count() == 0 then U.console("no split is running") end
  cancel_all()
  Mon.run_monitor()
end

return Mon
