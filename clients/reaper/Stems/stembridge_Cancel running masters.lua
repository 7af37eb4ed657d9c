-- @description Cancel running masters
-- @author stembridge developers
-- @version 0.3.0
-- @changelog
--   Mastering and loudness analysis by the stembridge engine: each master is a new take, one undo point.
-- @noindex
--   (installed with the package "stembridge_Master selected items (streaming).lua")
-- @provides
--   [main] stembridge_Cancel running masters.lua
-- @about
--   Stops every running master of the stembridge engine; no new takes are added for them.

local dir = select(2, reaper.get_action_context()):match("^(.*[/\\])") or ""
local core = dofile(dir .. "lib/stembridge_core.lua")
core.cancel_masters()
