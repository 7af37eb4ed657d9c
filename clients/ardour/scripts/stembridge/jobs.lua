-- stembridge for Ardour, stage "jobs": one record per split, saved as JSON in the
-- session folder (<session>/stembridge/jobs/<id>.json), so the follow hook (its own Lua
-- state), a restarted Ardour and the tests all see the same jobs. Loaded by core.lua
-- with util and json; returns the table Jobs.

local U, J = ...

local Jobs = {}

--- <session folder>/stembridge[/sub]; made on first use.
function Jobs.dir(sub)
  local dir = U.join(Session:path(), "stembridge")
  if sub then dir = U.join(dir, sub) end
  U.mkdir(dir)
  return dir
end

local function path_of(id)
  return U.join(Jobs.dir("jobs"), id .. ".json")
end

--- A new record id: time and a counter, unique within the session folder.
local counter = 0
function Jobs.new_id()
  repeat
    counter = counter + 1
    local id = string.format("%s-%04d", os.date("%Y%m%d-%H%M%S"), counter)
    if not U.exists(path_of(id)) then return id end
  until false
end

--- Save a record (fields starting with "_" stay in memory only).
function Jobs.save(rec)
  local out = {}
  for k, v in pairs(rec) do
    if type(k) ~= "string" or k:sub(1, 1) ~= "_" then out[k] = v end
  end
  return U.write_file_atomic(path_of(rec.id), J.encode(out))
end

--- Every saved record of this session, oldest first.
function Jobs.all()
  local list = {}
  local dir = Jobs.dir("jobs")
  local ls = io.popen("ls -1 " .. U.shell_word(dir) .. " 2>/dev/null")
  if not ls then return list end
  for name in ls:lines() do
    if name:match("^[%w%-]+%.json$") then
      local rec = J.decode(U.read_file(U.join(dir, name)) or "")
      if type(rec) == "table" and rec.id then list[#list + 1] = rec end
    end
  end
  ls:close()
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

--- Records still being followed (not done, failed or cancelled).
function Jobs.active()
  local out = {}
  for _, rec in ipairs(Jobs.all()) do
    if rec.state ~= "done" and rec.state ~= "failed" and rec.state ~= "cancelled" then
      out[#out + 1] = rec
    end
  end
  return out
end

return Jobs
