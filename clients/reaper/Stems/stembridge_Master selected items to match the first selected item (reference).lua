-- @description Master selected items to match the first selected item (reference)
-- @author stembridge developers
-- @version 0.4.0
-- @changelog
--   A 5-stem split action (vocals, drums, bass, piano, other); Settings offers the engine's own model list.
-- @noindex
--   (installed with the package "stembridge_Master selected items (streaming).lua")
-- @provides
--   [main] stembridge_Master selected items to match the first selected item (reference).lua
-- @about
--   Masters the selected items to the loudness, tone and width of the first selected item, each into a new take.

local dir = select(2, reaper.get_action_context()):match("^(.*[/\\])") or ""
local core = dofile(dir .. "lib/stembridge_core.lua")
core.master_action("reference")
