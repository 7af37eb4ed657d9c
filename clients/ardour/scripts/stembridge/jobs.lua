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

Jobs.RESCAN = 1.0  -- seconds between two listings of the jobs folder
local listed = { dir = nil, at = -math.huge, names = {} }

--- Save a record (fields starting with "_" stay in memory only).
function Jobs.save(rec)
  local known = false
  for _, name in ipairs(listed.names) do known = known or name == rec.id .. ".json" end
  if not known then listed.at = -math.huge end  -- a new record: list the folder again
  local out = {}
  for k, v in pairs(rec) do
    if type(k) ~= "string" or k:sub(1, 1) ~= "_" then out[k] = v end
  end
  return U.write_file_atomic(path_of(rec.id), J.encode(out))
end

--- The record files of the folder `dir`, listed at most every Jobs.RESCAN seconds (the
--- follow hook runs every 100 ms; a listing starts a process).
local function names_in(dir, fresh)
  if fresh or listed.dir ~= dir or U.now() - listed.at >= Jobs.RESCAN then
    local names = {}
    local ls = io.popen("ls -1 " .. U.shell_word(dir) .. " 2>/dev/null")
    if ls then
      for name in ls:lines() do
        if name:match("^[%w%-]+%.json$") then names[#names + 1] = name end
      end
      ls:close()
    end
    listed = { dir = dir, at = U.now(), names = names }
  end
  return listed.names
end

--- Every saved record of this session, oldest first (`fresh`: list the folder now).
function Jobs.all(fresh)
  local list = {}
  local dir = Jobs.dir("jobs")
  for _, name in ipairs(names_in(dir, fresh)) do
    local rec = J.decode(U.read_file(U.join(dir, name)) or "")
    if type(rec) == "table" and rec.id then list[#list + 1] = rec end
  end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

--- Records still being followed (not done, failed or cancelled).
function Jobs.active(fresh)
  local out = {}
  for _, rec in ipairs(Jobs.all(fresh)) do
    if rec.state ~= "done" and rec.state ~= "failed" and rec.state ~= "cancelled" then
      out[#out + 1] = rec
    end
  end
  return out
end

return Jobs
