-- @description Split selected items to vocals and instrumental
-- @author stembridge developers
-- @version 0.3.0
-- @changelog
--   Progressive stems from the stembridge engine: tracks at once, regions as they are final, one undo point.
-- @noindex
--   (installed with the package "stembridge_Split selected items to stems (vocals, drums, bass, other).lua")
-- @provides
--   [main] stembridge_Split selected items to vocals and instrumental.lua
-- @about
--   Splits each selected audio item into vocals and instrumental on new tracks under it.

local dir = select(2, reaper.get_action_context()):match("^(.*[/\\])") or ""
local core = dofile(dir .. "lib/stembridge_core.lua")
core.split_action(2)
