-- @description Cancel running masters
-- @author stembridge developers
-- @version 0.4.0
-- @changelog
--   A 5-stem split action (vocals, drums, bass, piano, other); Settings offers the engine's own model list.
-- @noindex
--   (installed with the package "stembridge_Master selected items (streaming).lua")
-- @provides
--   [main] stembridge_Cancel running masters.lua
-- @about
--   Stops every running master of the stembridge engine; no new takes are added for them.

local dir = select(2, reaper.get_action_context()):match("^(.*[/\\])") or ""
local core = dofile(dir .. "lib/stembridge_core.lua")
core.cancel_masters()
