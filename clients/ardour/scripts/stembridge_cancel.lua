ardour {
  ["type"] = "EditorAction",
  name = "stembridge: Cancel running splits",
  author = "stembridge",
  license = "MIT",
  description = [[Stops the engine's jobs of this session; their unfinished stem tracks are emptied and deactivated.]]
}

function factory () return function ()
  local dir = os.getenv("STEMBRIDGE_ARDOUR_LIB") or (ARDOUR.user_config_directory(-1) .. "/scripts/stembridge")
  local SB = assert(loadfile(dir .. "/core.lua"))()(dir)
  SB.cancel_all()
end end
