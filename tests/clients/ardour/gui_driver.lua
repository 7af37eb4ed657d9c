ardour { ["type"] = "EditorHook", name = "stembridge test driver",
         description = "Drives a split in Ardour's GUI for tests/clients/test_ardour_gui.py" }

function signals ()
  return LuaSignal.Set():add ({ [LuaSignal.LuaTimerDS] = true })
end

-- On Ardour's 100 ms timer: split the region of each track of $SB_SPLITS
-- ("Track:stems,Track:stems") with the installed library, all at once, let the real follow hook do its work,
-- then record the playlists when the jobs are done, after one undo and after redo,
-- save the session, write $SB_RESULT (JSON) and quit.
function factory ()
  local SB, out, ticks, phase, t0
  local function playlists()
    local res = {}
    for t in Session:get_tracks():iter() do
      local list = {}
      for r in t:to_track():playlist():region_list():iter() do
        local fs = r:source(0):to_filesource()
        list[#list + 1] = { position = r:position():samples(), start = r:start():samples(),
          length = r:length():samples(), gain = r:to_audioregion():scale_amplitude(),
          file = fs:isnil() and "" or fs:path(), channels = r:to_audioregion():n_channels() }
      end
      res[t:name()] = list
    end
    return res
  end
  local function finish()
    out.jobs = SB.jobs.all(true)
    out.messages = SB.util.messages
    Session:save_state("", false, false, false)
    SB.util.write_file_atomic(os.getenv("SB_RESULT"), SB.json.encode(out))
    phase = "quit"
  end
  return function (signal, ref, ...)
    ticks = (ticks or 0) + 1
    if phase == "quit" then return end
    local ok, err = pcall(function ()
      if not SB then
        local dir = ARDOUR.user_config_directory(-1) .. "/scripts/stembridge"
        SB = assert(loadfile(dir .. "/core.lua"))()(dir)
        out, phase = { ticks = {}, running_with_regions = false }, "wait"
      end
      if phase == "wait" and ticks >= 10 then
        t0 = SB.util.now()
        out.started = 0
        for name, stems in os.getenv("SB_SPLITS"):gmatch("([^,:]+):(%d)") do
          local regions = {}
          for r in Session:route_by_name(name):to_track():playlist():region_list():iter() do
            regions[#regions + 1] = r
          end
          out.started = out.started + #SB.split(regions, tonumber(stems))
        end
        out.action_s, phase = SB.util.now() - t0, "follow"
      elseif phase == "follow" then
        local jobs, busy = SB.jobs.all(true), false
        for _, j in ipairs(jobs) do
          if j.state ~= "done" and j.state ~= "failed" and j.state ~= "cancelled" then busy = true end
          if j.state == "running" then
            for _, id in pairs(j.tracks or {}) do
              local route = Session:route_by_id(PBD.ID(id))
              if not route:isnil() and route:to_track():playlist():region_list():size() > 0 then
                out.running_with_regions = true
              end
            end
          end
        end
        if not busy or SB.util.now() - t0 > 150 then
          -- one undo step per finished job (the last one first), then redo them all
          out.after_done = playlists()
          out.after_undo = {}
          for i = 1, #jobs do
            Editor:access_action("Editor", "undo")
            out.after_undo[i] = playlists()
          end
          for _ = 1, #jobs do Editor:access_action("Editor", "redo") end
          out.after_redo = playlists()
          finish()
        end
      end
    end)
    if not ok then
      out = out or {}
      out.error = tostring(err)
      finish()
    end
  end
end
