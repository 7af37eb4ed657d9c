-- @description Settings
-- @author stembridge developers
-- @version 0.4.0
-- @changelog
--   A 5-stem split action (vocals, drums, bass, piano, other); Settings offers the engine's own model list.
-- @noindex
--   (installed with the package "stembridge_Split selected items to stems (vocals, drums, bass, other).lua")
-- @provides
--   [main] stembridge_Settings.lua
-- @about
--   Model (picked from the engine's own list), device, output folder, folder track, mute original, stem colors and the path to the stembridge engine.

local dir = select(2, reaper.get_action_context()):match("^(.*[/\\])") or ""
local core = dofile(dir .. "lib/stembridge_core.lua")
core.settings_action()
