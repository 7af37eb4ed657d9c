-- @noindex
-- stembridge for REAPER: the library the action scripts load (Lua 5.4), a facade over
-- one library file per stage, all in this folder and loaded relative to this file.
--
-- How a split works (PROTOCOL.md, "Files: the data plane" and "Request files"):
--   1. `split_selected` (stage "selection") reads the selected audio items, inserts a
--      folder of stem tracks under each item's track ("tracks") with one
--      "separating..." item per stem aligned with the source item ("placement"), one undo
--      point, writes a JSON request file per item and launches
--      `stembridge submit --request FILE` WITHOUT waiting ("engine": ExecProcess, a
--      command line that means the same with or without a shell; no file name of the
--      user's ever goes on a command line). An item already being split into the same
--      stems is followed, not split again.
--   2. The monitor ("monitor": one `reaper.defer` loop per REAPER, with a time budget per
--      tick) polls each request's reply file, then the job's manifest.json, and places
--      every finalized region as an item that plays exactly the audio the source item
--      plays there; the "separating..." items show the progress. Each job's step is
--      isolated: an error ends that job (with a message), never the others.
--   3. When the job is done it moves the consolidated stem files to the output folder it
--      reserved and replaces the region items by one item per stem with the source
--      item's geometry, as an undo point of its own.
-- Jobs are saved in the project ("jobs": ProjExtState "stembridge"), so a monitor that was
-- stopped, or a REAPER that was restarted, picks them up again where they were; what an
-- undo or redo brings back is made live again or marked dead ("history").
-- The monitor publishes the running jobs ("status"); the "Show split status" action's
-- window ("window", gfx) lists them, with a Cancel button per job.
-- "util" holds files, paths and the settings; "settings" the Settings action (the
-- engine's model list in a menu, then the dialog);
-- stembridge_constants.lua (generated from protocol/) the error codes, their hints and
-- the stem names; stembridge_json.lua the JSON codec.

local source = debug.getinfo(1, "S").source
if source:sub(1, 1) ~= "@" then
  error("stembridge: load stembridge_core.lua with dofile(path), so it finds its stages", 0)
end
local HERE = source:sub(2):match("^(.-)[^/\\]*$")

--- Run the library file `name`.lua of this folder with `...` as its arguments.
local function stage(name, ...)
  local chunk, err = loadfile(HERE .. name .. ".lua")
  if not chunk then error("stembridge: cannot load " .. tostring(err), 0) end
  return chunk(...)
end

local J = stage("stembridge_json")
local C = stage("stembridge_constants")
local U = stage("stembridge_util")
local T = stage("stembridge_tracks", U)
local P = stage("stembridge_placement", U, T)
local Jobs = stage("stembridge_jobs", U, J, C, T, P)
local E = stage("stembridge_engine", U, J, C, Jobs)
local H = stage("stembridge_history", U, T, P, Jobs)
local St = stage("stembridge_status", U, J, Jobs)
local Mon = stage("stembridge_monitor", U, J, C, T, P, Jobs, E, H, St)
local S = stage("stembridge_selection", U, C, T, P, Jobs, E, Mon)
local Settings = stage("stembridge_settings", U, J, E)
local W = stage("stembridge_window", U, St, Mon)
local Master = stage("stembridge_master", U, J, C, E)  -- mastering and loudness actions

local M = {}

M.EXT = U.EXT                          -- ExtState / ProjExtState section
M.BUDGET = Mon.BUDGET                  -- seconds of work per defer tick
M.POLL = Mon.POLL                      -- seconds between two reads of one job's files
M.LAUNCH_TIMEOUT = E.LAUNCH_TIMEOUT    -- seconds for `stembridge submit` to show it runs
M.ACCEPT_TIMEOUT = E.ACCEPT_TIMEOUT    -- seconds for the engine to accept (incl. starting)
M.STEMS = C.STEMS                      -- stem count -> stem names, in track order
M.DEFAULTS = U.DEFAULTS
M.constants = C
M.json = J

M.get_setting = U.get_setting
M.set_setting = U.set_setting
M.stem_colors = U.stem_colors
M.describe_item = S.describe_item
M.split_selected = S.split_selected
M.split_action = S.split_action
M.cancel_record = Mon.cancel_record
M.tick = Mon.tick
M.monitor_alive = Mon.monitor_alive
M.run_monitor = Mon.run_monitor
M.cancel_action = Mon.cancel_action
M.parse_settings = Settings.parse_settings
M.settings_dialog = Settings.settings_dialog
M.settings_action = Settings.settings_action
M.status_window = W.show
M.master_action = Master.action
M.cancel_masters = Master.cancel_action
M.master = Master

--- The library, ready (kept for callers of 0.2.0, whose action scripts passed the
--- library's folder; the stages are found relative to this file).
function M.init(_dir) return M end

M._internal = { command_line = E.command_line, engine_argv = E.engine_argv,
                safe_name = U.safe_name, gaps = P.gaps, output_folder = Mon.output_folder,
                spool_dir = E.spool_dir }

return M
