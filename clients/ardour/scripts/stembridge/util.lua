-- stembridge for Ardour, stage "util": time, files, paths, launching a program in the
-- background, messages (a dialog in the GUI, stderr headless). Lua 5.3, no Ardour
-- objects beyond ARDOUR.LuaAPI, LuaDialog and os.forkexec where they exist.

local U = {}

U.MAX_FILE = 4 * 1024 * 1024        -- bytes: the most we read of any JSON file

--- Seconds, monotonic (ARDOUR.LuaAPI.monotonic_time is in microseconds).
function U.now()
  if ARDOUR and ARDOUR.LuaAPI and ARDOUR.LuaAPI.monotonic_time then
    return ARDOUR.LuaAPI.monotonic_time() / 1e6
  end
  return os.clock()
end

function U.join(a, b)
  if a:sub(-1) == "/" then return a .. b end
  return a .. "/" .. b
end

--- A file's contents, at most U.MAX_FILE bytes; nil when missing, unreadable or larger.
function U.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read(U.MAX_FILE + 1)
  f:close()
  if data and #data > U.MAX_FILE then return nil end
  return data
end

function U.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

--- Write `data` to a temporary name beside `path`, then rename it over `path`.
function U.write_file_atomic(path, data)
  local tmp = path .. ".part"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  f:close()
  if not ok then os.remove(tmp) return nil, werr end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then os.remove(tmp) return nil, rerr end
  return true
end

--- `s` as one single-quoted POSIX shell word (any byte is safe inside it).
function U.shell_word(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Make the folder `dir` (and its parents).
function U.mkdir(dir)
  if ARDOUR and ARDOUR.LuaAPI and ARDOUR.LuaAPI.file_test
      and ARDOUR.LuaAPI.file_test(dir, ARDOUR.LuaAPI.FileTest.IsDir) then
    return true
  end
  return os.execute("mkdir -p " .. U.shell_word(dir) .. " 2>/dev/null")
end

--- Start argv[1] with the other arguments and never wait for it. In Ardour's GUI through
--- os.forkexec (no shell); headless (ardour-lua has no forkexec) through `sh -c` with
--- every argument quoted, in the background. Returns true or nil, message.
function U.spawn(argv)
  if os.forkexec then
    os.forkexec(table.unpack(argv))
    return true
  end
  local words = {}
  for i, a in ipairs(argv) do words[i] = U.shell_word(a) end
  local ok = os.execute(table.concat(words, " ") .. " </dev/null >/dev/null 2>&1 &")
  if not ok then return nil, "the shell could not start " .. argv[1] end
  return true
end

--- Tell the user: a dialog in Ardour's GUI, a line on stderr headless. Also kept in
--- U.messages (the tests read it).
U.messages = {}
function U.message(text, title)
  U.messages[#U.messages + 1] = text
  if LuaDialog and LuaDialog.Message then
    LuaDialog.Message(title or "stembridge", text, LuaDialog.MessageType.Error,
      LuaDialog.ButtonType.Close):run()
  else
    io.stderr:write("stembridge: " .. text .. "\n")
  end
end

--- A name safe inside a file name: path separators and control characters replaced.
function U.safe_name(name)
  local s = tostring(name):gsub("[%c/\\:]", "_")
  if s == "" or s == "." or s == ".." then s = "region" end
  return s
end

return U
