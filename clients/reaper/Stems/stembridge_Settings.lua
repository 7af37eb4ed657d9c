-- @description Settings
-- @author stembridge developers
-- @version 0.3.0
-- @changelog
--   Progressive stems from the stembridge engine: tracks at once, regions as they are final, one undo point.
-- @noindex
--   (installed with the package "stembridge_Split selected items to stems (vocals, drums, bass, other).lua")
-- @provides
--   [main] stembridge_Settings.lua
-- @about
--   Model, device, output folder, folder track, mute original, stem colors and the path to the stembridge engine.

local dir = select(2, reaper.get_action_context()):match("^(.*[/\\])") or ""
local core = dofile(dir .. "lib/stembridge_core.lua")
core.settings_dialog()
