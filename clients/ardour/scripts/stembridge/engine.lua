-- stembridge for Ardour, stage "engine": how the scripts reach the engine, exactly as
-- the REAPER scripts do (PROTOCOL.md, "Request files"): a JSON request file, `stembridge
-- submit --request FILE` started in the background (never a user's file name on a
-- command line), its reply file polled; `stembridge cancel JOB`. Loaded by core.lua with
-- util, json, constants and jobs; returns the table E.

local U, J, C, Jobs = ...

local E = {}

E.LAUNCH_TIMEOUT = 20.0   -- seconds for `stembridge submit` to show that it runs
E.ACCEPT_TIMEOUT = 120.0  -- seconds for the engine to accept (includes starting it)

--- The engine command: $STEMBRIDGE_ENGINE (the stembridge command, or a Python that has
--- stembridge installed), else `stembridge` on Ardour's PATH.
function E.engine()
  local e = os.getenv("STEMBRIDGE_ENGINE")
  if e and e ~= "" then return e end
  return "stembridge"
end

function E.argv(args)
  local engine = E.engine()
  local argv = { engine }
  local base = engine:match("[^/]+$") or engine
  if base:match("^python[%d%.]*$") then
    argv[#argv + 1] = "-m"
    argv[#argv + 1] = "bridge"
  end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return argv
end

function E.missing_message()
  return "The stembridge engine did not start (" .. E.engine() .. ").\n"
    .. "Install it (see the stembridge README), then either put the stembridge command on "
    .. "Ardour's PATH or start Ardour with STEMBRIDGE_ENGINE set to its full path."
end

--- An engine error's message with what a DAW user does about its code (C.HINTS).
function E.with_hint(code, message)
  local hint = code and C.HINTS[code]
  return tostring(message) .. (hint and ("\n" .. hint) or "")
end

--- Write the record's request file and start `stembridge submit --request` on it.
--- Returns true, or nil, a wire code and a message.
function E.submit(rec)
  local dir = Jobs.dir("requests")
  rec.request = U.join(dir, rec.id .. ".json")
  rec.reply = U.join(dir, rec.id .. ".reply.json")
  os.remove(rec.reply)
  local body = { source = rec.file, stems = rec.stems, start_at = rec.start_at,
                 priority = "interactive", client = "ardour" }
  if rec.model and rec.model ~= "" then body.model = rec.model end
  local ok, err = U.write_file_atomic(rec.request, J.encode(body))
  if not ok then
    return nil, C.ERRORS.OUTPUT_FAILED, "Cannot write " .. rec.request .. ": " .. tostring(err)
  end
  local engine = E.engine()
  if engine:find("/", 1, true) and not U.exists(engine) then
    return nil, C.ERRORS.NOT_RUNNING, E.missing_message() .. "\n(there is no file " .. engine .. ")"
  end
  ok, err = U.spawn(E.argv({ "submit", "--request", rec.request }))
  if not ok then return nil, C.ERRORS.NOT_RUNNING, E.missing_message() .. "\n(" .. err .. ")" end
  rec.state, rec.launched = "submitting", U.now()
  return true
end

local function drop_request(rec)
  os.remove(rec.reply)
  os.remove(rec.request)
end

--- A submitting record: read its reply. Returns "accepted", "waiting", or nil, code,
--- message when the job cannot run.
function E.poll_reply(rec)
  local reply = J.decode(U.read_file(rec.reply) or "")
  local waited = U.now() - (rec.launched or U.now())
  if type(reply) ~= "table" then
    if waited > E.LAUNCH_TIMEOUT then return nil, C.ERRORS.NOT_RUNNING, E.missing_message() end
    return "waiting"
  end
  if reply.state == "accepted" then
    rec.job, rec.folder, rec.manifest = reply.job, reply.folder, reply.manifest
    drop_request(rec)
    return "accepted"
  elseif reply.state == "error" then
    drop_request(rec)
    local code = reply.code or C.ERRORS.INTERNAL
    return nil, code, E.with_hint(code, reply.message)
  elseif waited > E.ACCEPT_TIMEOUT then
    drop_request(rec)
    return nil, C.ERRORS.TIMEOUT, "The engine did not accept the job within "
      .. math.floor(E.ACCEPT_TIMEOUT) .. " s. Is it running? Try: stembridge ping"
  end
  return "waiting"
end

--- Ask the engine to stop a job (the job id is [0-9a-f-] only, by the protocol).
function E.cancel(job)
  if job and job:match("^[%w%-]+$") then U.spawn(E.argv({ "cancel", job })) end
end

--- The job's manifest, or nil while it cannot be read.
function E.manifest(rec)
  local m = J.decode(U.read_file(rec.manifest) or "")
  if type(m) == "table" then return m end
  return nil
end

return E
