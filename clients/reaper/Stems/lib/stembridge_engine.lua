-- @noindex
-- stembridge for REAPER, stage "engine": how the scripts reach the engine without
-- sockets (PROTOCOL.md, "Request files"). A JSON request file per job in
-- <resource>/Data/stembridge/, `stembridge submit --request FILE` launched in the
-- background (ExecProcess; a command line that means the same with or without a shell,
-- never a user's file name on it), its
-- reply file polled; `stembridge cancel JOB` to stop a job; the DAW hints of the error
-- codes. Loaded by stembridge_core.lua with the util, JSON, constants and jobs stages;
-- returns the table E.

local U, J, C, Jobs = ...

local E = {}

E.LAUNCH_TIMEOUT = 20.0           -- seconds for `stembridge submit` to show it runs
E.ACCEPT_TIMEOUT = 120.0          -- seconds for the engine to accept (includes starting it)

--- The argument list that runs the engine's CLI with `args`.
function E.engine_argv(args)
  local engine = U.get_setting("engine")
  local argv = { engine }
  local base = engine:match("[^/\\]+$") or engine
  if base:lower():match("^python[%d%.]*w?%.?e?x?e?$") then
    argv[#argv + 1] = "-m"
    argv[#argv + 1] = "bridge"
  end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return argv
end

--- Characters a POSIX shell changes inside double quotes (`$`, backquote, backslash, the
--- quote itself). On Linux and macOS, ExecProcess may run its command line through
--- /bin/sh: an argument free of these, in double quotes, reaches the program as it is
--- with or without a shell. (Windows: no shell; backslashes are path separators.)
E.SHELL_SPECIAL = '[%$`\\"]'

--- Whether `text` can go on a command line as it is, on this system.
function E.safe_argument(text)
  if text:find("[%c]") or text:find('"', 1, true) then return false end
  return U.is_windows() or not text:find(E.SHELL_SPECIAL)
end

--- A command line for ExecProcess: every argument in double quotes; one that a shell
--- would change (E.safe_argument) is refused. Only the engine path (a setting) and paths
--- this script made are ever passed.
function E.command_line(argv)
  local parts = {}
  for i, a in ipairs(argv) do
    if not E.safe_argument(a) then
      return nil, string.format("argument %d (%s) contains a quote, a control character or "
        .. "one of $ ` \\ that a shell would change", i, a)
    end
    parts[i] = '"' .. a .. '"'
  end
  return table.concat(parts, " ")
end

--- Launch the engine CLI in the background (never waits). Returns true or nil, message.
function E.launch(args)
  local cmd, err = E.command_line(E.engine_argv(args))
  if not cmd then return nil, err end
  local engine = U.get_setting("engine")
  if engine:find("[/\\]") and not reaper.file_exists(engine) then
    return nil, "there is no file " .. engine
  end
  -- No wait: REAPER returns at once. Whether the program runs shows in its reply file
  -- (a bare command name that is not on REAPER's PATH times out with a clear message).
  reaper.ExecProcess(cmd, U.is_windows() and -2 or -1)
  return true
end

local function engine_missing_message()
  local cmd, bad = E.command_line(E.engine_argv({ "submit" }))
  if not cmd then
    return "The path to the stembridge engine cannot be run safely: " .. bad .. ".\n"
      .. "In stembridge: Settings, give a path without these characters (for example a "
      .. "symbolic link to the engine)."
  end
  return "The stembridge engine did not start (" .. cmd .. ").\n"
    .. "Install it (see the stembridge README: pip install stembridge) and set the path to "
    .. "the stembridge command (or to the Python that has it) in stembridge: Settings."
end

--- The folder of the request and reply files: <resource>/Data/stembridge, or, where that
--- path holds a character a shell would change (E.safe_argument), a folder in the
--- temporary folder (TMPDIR, else /tmp). Returns the folder, or nil and why none fits.
function E.spool_dir()
  local candidates = { U.join(U.join(reaper.GetResourcePath(), "Data"), "stembridge") }
  if not U.is_windows() then
    for _, tmp in ipairs({ os.getenv("TMPDIR") or "", "/tmp" }) do
      if tmp ~= "" then candidates[#candidates + 1] = U.join(tmp, "stembridge-reaper") end
    end
  end
  for _, dir in ipairs(candidates) do
    if E.safe_argument(dir) then
      reaper.RecursiveCreateDirectory(dir, 0)
      return dir
    end
  end
  return nil, "no folder for the request files: REAPER's resource folder ("
    .. reaper.GetResourcePath() .. ") and the temporary folder hold one of $ ` \\ \""
end

--- An engine error's message, with what a DAW user does about its code (C.HINTS).
function E.with_hint(code, message)
  local hint = code and C.HINTS[code]
  return tostring(message) .. (hint and ("\n" .. hint) or "")
end

--- Write the record's request file and launch `stembridge submit` on it (state
--- "submitting"). Returns true, or nil, a wire code and a message.
function E.submit(rec)
  local dir, why = E.spool_dir()
  if not dir then return nil, C.ERRORS.OUTPUT_FAILED, why end
  rec.request = U.join(dir, rec.id .. ".json")
  rec.reply = U.join(dir, rec.id .. ".reply.json")
  os.remove(rec.reply)
  local body = { source = rec.file, stems = rec.stems, start_at = rec.start_at,
                 device = U.get_setting("device"), priority = "interactive",
                 client = "reaper" }
  if rec.model ~= "" then body.model = rec.model end
  rec.device = body.device
  local ok, err = U.write_file_atomic(rec.request, J.encode(body))
  if not ok then
    return nil, C.ERRORS.OUTPUT_FAILED, "cannot write " .. rec.request .. ": " .. tostring(err)
  end
  ok, err = E.launch({ "submit", "--request", rec.request })
  if not ok then
    local message = engine_missing_message()
    if not message:find(err, 1, true) then message = message .. "\n(" .. err .. ")" end
    return nil, C.ERRORS.NOT_RUNNING, message
  end
  rec.state, rec._launched = "submitting", U.now()
  return true
end

--- The request and its reply are read: delete both.
local function drop_request(rec)
  os.remove(rec.reply)
  os.remove(rec.request)
end

--- A submitting record: read its reply file; accepted -> "running" (saved), an error or
--- no reply in time -> the job fails.
function E.poll_reply(rec)
  local reply = J.decode(U.read_file(rec.reply) or "")
  if type(reply) ~= "table" then
    rec._launched = rec._launched or U.now()
    local waited = U.now() - rec._launched
    if waited > (tonumber(U.get_setting("launch_timeout")) or E.LAUNCH_TIMEOUT) then
      Jobs.fail(rec, C.ERRORS.NOT_RUNNING, engine_missing_message())
    end
    return
  end
  if reply.state == "accepted" then
    rec.job, rec.folder, rec.manifest = reply.job, reply.folder, reply.manifest
    rec.state = "running"
    drop_request(rec)
    Jobs.save(rec)
  elseif reply.state == "error" then
    drop_request(rec)
    local code = reply.code or C.ERRORS.INTERNAL
    Jobs.fail(rec, code, E.with_hint(code, reply.message))
  elseif U.now() - (rec._launched or U.now()) > E.ACCEPT_TIMEOUT then
    Jobs.fail(rec, C.ERRORS.TIMEOUT, "The engine did not accept the job within "
      .. math.floor(E.ACCEPT_TIMEOUT) .. " s. Is it running? Try: stembridge ping")
  end
end

--- Tell the engine to stop a record's job and forget it; a job not accepted yet is
--- cancelled as soon as it is (state "cancelling").
function E.stop_job(rec)
  if rec.job then
    E.launch({ "cancel", rec.job })
    Jobs.forget(rec)
  elseif rec.state == "submitting" then
    rec.state = "cancelling"
    Jobs.save(rec)
  else
    Jobs.forget(rec)
  end
end

--- A cancelling record: once the engine accepted the job, tell it to stop; then (or on
--- an error reply, or after the accept timeout) forget the record.
function E.poll_cancelling(rec)
  local reply = J.decode(U.read_file(rec.reply) or "")
  local waited = U.now() - (rec._launched or U.now())
  if type(reply) == "table" and reply.state == "accepted" then
    E.launch({ "cancel", reply.job })
  elseif not (type(reply) == "table" and reply.state == "error")
      and waited < E.ACCEPT_TIMEOUT then
    return
  end
  drop_request(rec)
  Jobs.forget(rec)
end

return E
