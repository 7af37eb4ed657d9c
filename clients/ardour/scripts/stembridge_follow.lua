ardour {
  ["type"] = "EditorHook",
  name = "stembridge: follow splits",
  author = "stembridge",
  license = "MIT",
  description = [[Follows the stembridge splits of the session every 100 ms, a few milliseconds at a time: places each finished part of the stems as the engine computes it, and the whole stems at the end.]]
}

function signals ()
  return LuaSignal.Set():add ({ [LuaSignal.LuaTimerDS] = true })
end

function factory ()
  local SB
  return function (signal, ref, ...)
    if not SB then
      local dir = os.getenv("STEMBRIDGE_ARDOUR_LIB") or (ARDOUR.user_config_directory(-1) .. "/scripts/stembridge")
      SB = assert(loadfile(dir .. "/core.lua"))()(dir)
    end
    SB.tick(0.008)
  end
end
