-- @noindex
-- stembridge for REAPER, stage "settings": the Settings action's dialog (REAPER's
-- GetUserInputs) and the checks of its answers; the values are saved with the util
-- stage's set_setting. Loaded by stembridge_core.lua with the util stage; returns the
-- table Settings.

local U = ...

local Settings = {}

local FIELDS = {
  { key = "model", caption = "Model (empty: default for the stem count)" },
  { key = "device", caption = "Device: auto/cpu/cuda/mps" },
  { key = "output_dir", caption = "Output folder (empty: project media)" },
  { key = "folder_track", caption = "Folder track (y/n)", yn = true },
  { key = "mute_original", caption = "Mute the original item (y/n)", yn = true },
  { key = "colors", caption = "Stem colors (stem=#RRGGBB;...)" },
  { key = "engine", caption = "Engine: stembridge command or python" },
}
local DEVICES = { auto = true, cpu = true, cuda = true, mps = true }

--- Check the dialog's answers; returns {key -> value} or nil, a message saying what to fix.
function Settings.parse_settings(csv)
  local values, i = {}, 0
  for v in (csv .. "|"):gmatch("([^|]*)|") do
    i = i + 1
    values[i] = v:match("^%s*(.-)%s*$")
  end
  if i ~= #FIELDS then return nil, "Expected " .. #FIELDS .. " values." end
  local out = {}
  for n, f in ipairs(FIELDS) do
    local v = values[n]
    if f.yn then
      local yn = v:lower():sub(1, 1)
      if yn ~= "y" and yn ~= "n" and yn ~= "1" and yn ~= "0" then
        return nil, f.caption .. ": answer y or n."
      end
      v = (yn == "y" or yn == "1") and "1" or "0"
    end
    if v:find('"', 1, true) then return nil, f.caption .. ": no quotes, please." end
    out[f.key] = v
  end
  if not DEVICES[out.device] then return nil, "Device: one of auto, cpu, cuda, mps." end
  if out.engine == "" then return nil, "Engine: give the stembridge command or a path to it." end
  if out.model ~= "" and not out.model:match("^[%w_%-%.]+$") then
    return nil, "Model: a model name such as htdemucs (see: stembridge models list)."
  end
  for item in (out.colors .. ";"):gmatch("([^;]*);") do
    if item:match("%S") and not item:match("^%s*%w+%s*=%s*#?%x%x%x%x%x%x%s*$") then
      return nil, "Stem colors: write them as vocals=#E0533F;drums=#E8A33A (not " .. item .. ")."
    end
  end
  return out
end

--- The Settings action: one dialog; invalid answers are explained and asked again;
--- Cancel changes nothing. Returns true when the settings were saved.
function Settings.settings_dialog()
  local captions, current = {}, {}
  for i, f in ipairs(FIELDS) do
    captions[i] = f.caption
    local v = U.get_setting(f.key)
    if f.yn then v = v == "1" and "y" or "n" end
    current[i] = v
  end
  local csv = table.concat(current, "|")
  while true do
    local ok, answer = reaper.GetUserInputs("stembridge settings", #FIELDS,
      table.concat(captions, ",") .. ",separator=|,extrawidth=250", csv)
    if not ok then return false end
    local values, err = Settings.parse_settings(answer)
    if values then
      for k, v in pairs(values) do U.set_setting(k, v) end
      return true
    end
    if reaper.MB(err .. "\n\nEdit the settings again?", "stembridge settings", 4) ~= 6 then
      return false
    end
    csv = answer
  end
end

return Settings
