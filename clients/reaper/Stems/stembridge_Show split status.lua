-- @description Show split status
-- @author stembridge developers
-- @version 0.4.0
-- @changelog
--   A 5-stem split action (vocals, drums, bass, piano, other); Settings offers the engine's own model list.
-- @noindex
--   (installed with the package "stembridge_Split selected items to stems (vocals, drums, bass, other).lua")
-- @provides
--   [main] stembridge_Show split status.lua
-- @about
--   A small window listing the running splits: progress, time left, model and device, and a Cancel button per job. Run the action again (or press Escape, or close the window) to close it; the splits go on.

local dir = select(2, reaper.get_action_context()):match("^(.*[/\\])") or ""
local core = dofile(dir .. "lib/stembridge_core.lua")
core.status_window()
