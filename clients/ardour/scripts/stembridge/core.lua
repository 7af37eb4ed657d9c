-- stembridge for Ardour: the facade the action and hook scripts load (Lua 5.3, Ardour
-- 7 and later). Loads the stages beside this file and returns the table SB:
--   SB.split(regions, stems) -> records started, messages   (the split actions)
--   SB.tick(budget)          -> jobs still active             (the follow hook)
--   SB.cancel_all()          -> jobs cancelled                (the cancel action)
-- Usage: local SB = assert(loadfile(<this folder> .. "/core.lua"))()(<this folder>)
-- (Ardour's GUI Lua has loadfile but no dofile or require.)

return function(dir)
  local function stage(name, ...)
    local chunk, err = loadfile(dir .. "/" .. name .. ".lua")
    if not chunk then error("stembridge: cannot load " .. name .. ".lua: " .. tostring(err)) end
    return chunk(...)
  end
  local U = stage("util")
  local J = stage("json")
  local C = stage("constants")
  local Jobs = stage("jobs", U, J)
  local E = stage("engine", U, J, C, Jobs)
  local T = stage("tracks", U)
  local P = stage("placement", U, T)
  local Mon = stage("monitor", U, C, Jobs, E, T, P)
  local Sel = stage("selection", U, C, Jobs, E, T, Mon)
  return { split = Sel.split, tick = Mon.tick, cancel_all = Mon.cancel_all,
           util = U, json = J, constants = C, jobs = Jobs, placement = P }
end
