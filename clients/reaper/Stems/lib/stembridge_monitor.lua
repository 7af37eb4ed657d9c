-- @noindex
-- stembridge for REAPER, stage "monitor": one `reaper.defer` loop per REAPER, with a
-- time budget per tick, follows every job of every open project: polls each request's
-- reply file, then the job's manifest.json, places every finalized region, and when the
-- job is done moves the stem files to the output folder and swaps the region items for
-- one item per stem; cancelling (the Cancel action, or the stem tracks deleted). Loaded
-- by stembridge_core.lua with the util, JSON, constants, tracks, placement, jobs and
-- engine stages; returns the table Mon.

local U, J, C, T, P, Jobs, E = ...

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

--- "<output folder>/<item name> stems", or " (2)", " (3)"... where that one is taken.
local function output_folder(rec)
  local base = U.get_setting("output_dir")
  if base == "" then base = reaper.GetProjectPathEx(rec.proj) end
  local name = U.safe_name(rec.name) .. " stems"
  local dir, n = U.join(base, name), 1
  while reaper.file_exists(U.join(dir, rec.names[1] .. ".wav")) do
    n = n + 1
    dir = U.join(base, string.format("%s (%d)", name, n))
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
    Jobs.save(rec)
  end
  rec.finals = rec.finals or {}
  for _, stem in ipairs(rec.names) do
    if not rec.finals[stem] then
      if now() > deadline then rec._more = true return end
      local rel = manifest.final and manifest.final[stem]
      local dst = U.join(rec.out, stem .. ".wav")
      if not reaper.file_exists(dst) then
        local ok, err = move_file(U.join(rec.folder, rel or (stem .. ".wav")), dst)
        if not ok then
          Jobs.fail(rec, C.ERRORS.OUTPUT_FAILED, "Cannot write " .. dst .. ": " .. tostring(err)
            .. "\nChoose another output folder in stembridge: Settings.")
          return
        end
      end
      rec.finals[stem] = dst
      Jobs.save(rec)
    end
  end
  if rec.state ~= "swapped" then
    local g = rec.geom
    reaper.PreventUIRefresh(1)
    P.delete_items(rec, "^region:")
    P.delete_items(rec, "^gap$")
    for stem, tr in pairs(T.stem_tracks(rec)) do
      P.add_source_item(rec, tr, rec.finals[stem], g.pos, g.len, g.offs, rec.id .. ":final",
        stem)
    end
    reaper.PreventUIRefresh(-1)
    reaper.UpdateArrange()
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
  local meta = manifest.metadata or {}
  U.console(string.format("%s: %d stems in %s (%s %s on %s%s)", rec.name, #rec.names, rec.out,
    tostring(meta.model_name or "?"), tostring(meta.model_version or ""),
    tostring(meta.device or "?"), meta.cache_hit and ", from the cache" or ""))
  local warnings = type(meta.warnings) == "table" and meta.warnings or {}
  for _, w in ipairs(warnings) do U.console(rec.name .. ": warning: " .. tostring(w)) end
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
      P.place_region(rec, regions[i], sr)
      rec._next = i
      changed = true
    end
  end
  if changed then
    P.refresh_gaps(rec)
    reaper.UpdateArrange()
  end
  if m.state == "done" and not rec._more then finish(rec, m, deadline) end
end

--- Cancel a record: its tracks go at once (one undo point); the engine is told to stop
--- (a job not accepted yet is cancelled as soon as it is).
function Mon.cancel_record(rec)
  if rec.state == "cancelling" then return end
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

--------------------------------------------------------------------------- the loop

local last_scan, last_cancel = -1, nil

local function cancel_all()
  for _, id in ipairs(Jobs.ids()) do
    local rec = Jobs.get(id)
    if rec then Mon.cancel_record(rec) end
  end
end

--- One monitor tick: returns false when nothing is left to follow.
function Mon.tick()
  local t0 = now()
  local deadline = t0 + Mon.BUDGET
  reaper.SetExtState(U.EXT, "monitor", string.format("%.3f", t0), false)
  if t0 - last_scan > 0.25 then
    Jobs.scan_projects()
    last_scan = t0
  end
  local cancel = reaper.GetExtState(U.EXT, "cancel")
  if last_cancel == nil then last_cancel = cancel end
  if cancel ~= last_cancel then
    last_cancel = cancel
    cancel_all()
  end
  for _, id in ipairs(Jobs.ids()) do
    if now() > deadline then break end
    local rec = Jobs.get(id)
    if rec then
      if not reaper.ValidatePtr(rec.proj, "ReaProject*") then
        Jobs.unfollow(id)  -- its project was closed: it is saved there, and resumes on reopen
      else
        tick_record(rec, deadline)
      end
    end
  end
  P.build_peaks(deadline)
  local failures = Jobs.failures()
  if #failures > 0 then
    U.alert("A split failed:\n\n" .. table.concat(failures, "\n\n"))
  end
  return Jobs.count() > 0 or P.pending_peaks() > 0
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
    reaper.DeleteExtState(U.EXT, "monitor", false)
  end
end

--- Follow every job of every open project in a defer loop, unless a monitor runs.
function Mon.run_monitor()
  if Mon.monitor_alive() then return false end
  Jobs.scan_projects()
  reaper.atexit(function() reaper.DeleteExtState(U.EXT, "monitor", false) end)
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
