-- @noindex
-- stembridge for REAPER, stage "master": the mastering and loudness actions.
--
-- Each selected audio item's file is mastered by the engine (`stembridge master
-- --request FILE`, launched without waiting; the request, progress and reply files lie in
-- <resource>/Data/stembridge/, see bridge/commands/masterrequest.py). A defer loop with a
-- time budget polls the replies; a finished master becomes a NEW TAKE of its item (the
-- original take stays), named by intent and loudness, in one undo point, and the
-- figures (LUFS-I, dBTP, LRA, before -> after) show in a message box. Cancelling writes
-- each running request's .cancel file. Loaded by stembridge_core.lua with the util, JSON,
-- constants and engine stages; returns the table M.

local U, J, C, E = ...

local M = {}

M.BUDGET = 0.008          -- seconds of work per defer tick
M.TIMEOUT = 600.0         -- seconds a master may take before the script gives up on it

local pending = {}        -- id -> record {item, take_name, request, reply, cancel, ...}
local running = false     -- the defer loop is alive
local results = {}        -- finished records' lines for the summary box

local function spool_dir()
  local dir = U.join(U.join(reaper.GetResourcePath(), "Data"), "stembridge")
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

--- The audio file an item plays (its active take's source, the parent of a section).
function M.item_file(item)
  local take = reaper.GetActiveTake(item)
  if not take or reaper.TakeIsMIDI(take) then return nil end
  local src = reaper.GetMediaItemTake_Source(take)
  local parent = src and reaper.GetMediaSourceParent(src)
  if parent then src = parent end
  local file = src and reaper.GetMediaSourceFileName(src) or ""
  if file == "" then return nil end
  return file
end

local function selected_items()
  local items = {}
  for i = 0, reaper.CountSelectedMediaItems(0) - 1 do
    items[#items + 1] = reaper.GetSelectedMediaItem(0, i)
  end
  return items
end

local function fmt(v, unit)
  if type(v) ~= "number" then return "--" end
  return string.format("%.1f%s", v, unit or "")
end

--- "LUFS-I -9.8 -> -14.0, dBTP 0.3 -> -1.0, LRA 6.2 -> 5.9" (or before only).
function M.figures(summary)
  local b, a = summary.before or {}, summary.after
  if not a then
    return string.format("LUFS-I %s, true peak %s dBTP, LRA %s LU",
      fmt(b.lufs), fmt(b.true_peak), fmt(b.lra))
  end
  return string.format("LUFS-I %s -> %s, true peak %s -> %s dBTP, LRA %s -> %s LU",
    fmt(b.lufs), fmt(a.lufs), fmt(b.true_peak), fmt(a.true_peak), fmt(b.lra), fmt(a.lra))
end

local function out_dir()
  local dir = U.get_setting("output_dir")
  if dir == "" then dir = reaper.GetProjectPathEx(0) end
  return U.join(dir, "stembridge masters")
end

local function launch(rec, body)
  local dir = spool_dir()
  rec.request = U.join(dir, rec.id .. ".master.json")
  rec.reply = U.join(dir, rec.id .. ".master.reply.json")
  rec.cancel = U.join(dir, rec.id .. ".master.cancel")
  os.remove(rec.reply)
  local ok, err = U.write_file_atomic(rec.request, J.encode(body))
  if not ok then return nil, "cannot write " .. rec.request .. ": " .. tostring(err) end
  ok, err = E.launch({ "master", "--request", rec.request })
  if not ok then return nil, "the engine did not start (" .. tostring(err) .. ")" end
  rec.started = U.now()
  pending[rec.id] = rec
  return true
end

--- Add the finished master as a new, active take of its item: one undo point.
local function add_take(rec, reply)
  if not reaper.ValidatePtr(rec.item, "MediaItem*") then return "the item is gone" end
  reaper.Undo_BeginBlock()
  reaper.PreventUIRefresh(1)
  local take = reaper.AddTakeToMediaItem(rec.item)
  reaper.SetMediaItemTake_Source(take, reaper.PCM_Source_CreateFromFile(reply.file))
  local after = reply.summary and reply.summary.after or {}
  local name = string.format("master %s %s LUFS", reply.intent or rec.preset,
    fmt(after.lufs))
  reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", name, true)
  reaper.SetMediaItemInfo_Value(rec.item, "I_CURTAKE", reaper.CountTakes(rec.item) - 1)
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  reaper.Undo_EndBlock("stembridge: master selected items (" .. rec.preset .. ")", -1)
  return nil, name
end

local function finish(rec, reply)
  pending[rec.id] = nil
  os.remove(rec.request)
  os.remove(rec.reply)
  os.remove(rec.cancel)
  if reply.state ~= "done" then
    local code = reply.code or C.ERRORS.INTERNAL
    if code ~= C.ERRORS.CANCELLED then
      results[#results + 1] = rec.label .. ": " .. E.with_hint(code, reply.message)
    end
    return
  end
  if rec.mode == "analyze" then
    results[#results + 1] = rec.label .. ": " .. M.figures(reply.summary)
    return
  end
  local err, name = add_take(rec, reply)
  results[#results + 1] = rec.label .. ": " .. (err or (name .. "\n  " .. M.figures(reply.summary)))
end

--- One tick: read the replies within the time budget; the summary box when all are done.
function M.tick()
  local t0 = U.now()
  for id, rec in pairs(pending) do
    if U.now() - t0 > M.BUDGET then break end
    local reply = J.decode(U.read_file(rec.reply) or "")
    if type(reply) == "table" and reply.state then
      finish(rec, reply)
    elseif U.now() - rec.started > M.TIMEOUT then
      finish(rec, { state = "error", code = C.ERRORS.TIMEOUT,
                    message = "The engine did not finish within " .. M.TIMEOUT .. " s." })
    end
    if pending[id] == nil then break end  -- the table changed: next tick goes on
  end
  if next(pending) == nil then
    running = false
    if #results > 0 then
      reaper.MB(table.concat(results, "\n\n"), "stembridge", 0)
      results = {}
    end
    return false
  end
  return true
end

local function loop()
  if M.tick() then reaper.defer(loop) end
end

local function start_loop()
  if not running then
    running = true
    reaper.defer(loop)
  end
end

--- The action: master the selected items for `preset` ("streaming", "loud",
--- "reference": the first selected item is the reference, the others are mastered to
--- it), or "analyze" them.
function M.action(preset)
  local items = selected_items()
  local reference
  if preset == "reference" then
    reference = items[1] and M.item_file(items[1])
    table.remove(items, 1)
    if not reference or #items == 0 then
      U.alert("Select the reference item first, then the items to master to it.")
      return
    end
  end
  if #items == 0 then
    U.alert("Select one or more audio items first.")
    return
  end
  local skipped = 0
  for _, item in ipairs(items) do
    local file = M.item_file(item)
    if not file then
      skipped = skipped + 1
    else
      local take = reaper.GetActiveTake(item)
      local rec = { id = U.new_id(), item = item, preset = preset,
                    mode = preset == "analyze" and "analyze" or "master",
                    label = reaper.GetTakeName(take) }
      local body = { source = file, mode = rec.mode, out_dir = out_dir(),
                     preset = preset ~= "analyze" and preset or nil, reference = reference,
                     client = "reaper" }
      local ok, err = launch(rec, body)
      if not ok then
        results[#results + 1] = rec.label .. ": " .. err .. "\n" .. C.HINTS[C.ERRORS.NOT_RUNNING]
      end
    end
  end
  if skipped > 0 then
    results[#results + 1] = skipped .. " MIDI or empty item(s) skipped."
  end
  if next(pending) == nil and #results > 0 then
    reaper.MB(table.concat(results, "\n\n"), "stembridge", 0)
    results = {}
    return
  end
  start_loop()
end

--- Cancel every running master of this REAPER (of any script): each request file in the
--- spool folder without a reply gets its .cancel file, which the engine reads between
--- stages. Returns how many.
function M.cancel_all()
  local dir, n, i = spool_dir(), 0, 0
  while true do
    local name = reaper.EnumerateFiles(dir, i)
    if not name then break end
    local id = name:match("^(%x+)%.master%.json$")
    if id and not reaper.file_exists(U.join(dir, id .. ".master.reply.json")) then
      U.write_file_atomic(U.join(dir, id .. ".master.cancel"), "cancel")
      n = n + 1
    end
    i = i + 1
  end
  return n
end

--- The cancel action.
function M.cancel_action()
  local n = M.cancel_all()
  if n == 0 then U.alert("No master is running.") end
end

M._pending = pending
return M
