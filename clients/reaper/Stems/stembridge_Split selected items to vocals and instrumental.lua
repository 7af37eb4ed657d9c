-- @description Split selected items to vocals and instrumental
-- @author stembridge developers
-- @version 0.2.0
-- @changelog
--   Progressive stems from the stembridge engine: tracks at once, regions as they are final, one undo point.
-- @noindex
--   (installed with the package "stembridge_Split selected items to stems (vocals, drums, bass, other).lua")
-- @provides
--   [main] stembridge_Split selected items to vocals and instrumental.lua
-- @about
--   Splits each selected audio item into vocals and instrumental on new tracks under it.

local function script_folder()
  local path = select(2, reaper.get_action_context())
  return path:match("^(.*[/\\])") or ""
end

local core = dofile(script_folder() .. "lib/stembridge_core.lua").init(script_folder() .. "lib")
reaper.set_action_options(1 | 2) -- a relaunch restarts the monitor; jobs are kept
core.split_selected(2)
core.run_monitor()
