-- @description Split selected items to stems (vocals, drums, bass, other)
-- @author stembridge developers
-- @version 0.4.0
-- @changelog
--   A 5-stem split action (vocals, drums, bass, piano, other); Settings offers the engine's own model list.
-- @provides
--   [main] stembridge_Split selected items to vocals and instrumental.lua
--   [main] stembridge_Split selected items to 5 stems.lua
--   [main] stembridge_Split selected items to 6 stems.lua
--   [main] stembridge_Cancel running splits.lua
--   [main] stembridge_Settings.lua
--   [main] stembridge_Show split status.lua
--   [nomain] lib/stembridge_core.lua
--   [nomain] lib/stembridge_constants.lua
--   [nomain] lib/stembridge_util.lua
--   [nomain] lib/stembridge_tracks.lua
--   [nomain] lib/stembridge_placement.lua
--   [nomain] lib/stembridge_jobs.lua
--   [nomain] lib/stembridge_engine.lua
--   [nomain] lib/stembridge_history.lua
--   [nomain] lib/stembridge_status.lua
--   [nomain] lib/stembridge_monitor.lua
--   [nomain] lib/stembridge_selection.lua
--   [nomain] lib/stembridge_settings.lua
--   [nomain] lib/stembridge_window.lua
--   [nomain] lib/stembridge_json.lua
-- @about
--   Splits each selected audio item into vocals, drums, bass and other on new tracks under it. The stems fill in while the engine works, starting at the play cursor.

local dir = select(2, reaper.get_action_context()):match("^(.*[/\\])") or ""
local core = dofile(dir .. "lib/stembridge_core.lua")
core.split_action(4)
