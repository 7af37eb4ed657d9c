ardour {
  ["type"] = "EditorAction",
  name = "stembridge: Split selected regions to vocals and instrumental",
  author = "stembridge",
  license = "MIT",
  description = [[Separates each selected audio region into vocals and instrumental. New tracks, one per stem, appear under each region's track and fill in
while the engine works (add the "stembridge: follow splits" hook once, in Edit > Lua Scripts >
Script Manager > Action Hooks).]]
}

function factory () return function ()
  local dir = os.getenv("STEMBRIDGE_ARDOUR_LIB") or (ARDOUR.user_config_directory(-1) .. "/scripts/stembridge")
  local SB = assert(loadfile(dir .. "/core.lua"))()(dir)
  SB.split(Editor:get_selection().regions:regionlist(), 2)
end end
