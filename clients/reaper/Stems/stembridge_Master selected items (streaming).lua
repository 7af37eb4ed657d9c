-- @description Master selected items (streaming)
-- @author stembridge developers
-- @version 0.4.0
-- @changelog
--   A 5-stem split action (vocals, drums, bass, piano, other); Settings offers the engine's own model list.
-- @provides
--   [main] stembridge_Master selected items (loud).lua
--   [main] stembridge_Master selected items to match the first selected item (reference).lua
--   [main] stembridge_Analyze loudness of selected items.lua
--   [main] stembridge_Cancel running masters.lua
--   [nomain] lib/stembridge_master.lua
-- @about
--   Masters each selected audio item for streaming (-14 LUFS, -1 dBTP) into a new take (the original take stays). Needs the stembridge package (its lib/).

local dir = select(2, reaper.get_action_context()):match("^(.*[/\\])") or ""
local core = dofile(dir .. "lib/stembridge_core.lua")
core.master_action("streaming")
