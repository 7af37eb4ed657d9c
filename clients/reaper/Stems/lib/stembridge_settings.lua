-- @noindex
-- stembridge for REAPER, stage "settings": the Settings action. The model is picked from
-- the engine's own list (`stembridge models list --json --out FILE`, launched in the
-- background; REAPER's Lua has no sockets for the server's `models_available`, and the
-- list needs no running server), in a gfx.showmenu menu; then REAPER's GetUserInputs
-- dialog for every setting, whose answers are checked and saved with the util stage's
-- set_setting. When the engine does not answer, the list it gave last time is used, else
-- a model name is typed by hand. Loaded by stembridge_core.lua with the util, JSON and
-- engine stages; returns the table Settings.

local U, J, E = ...

local Settings = {}

Settings.MODELS_TIMEOUT = 15.0  -- seconds the action waits for the engine's model list
Settings.MODELS_FILE = "models.json"  -- the list the engine gave last, in the spool folder

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
local NAME = "^[%w_%-%.%+@]+$"  -- a model name, or an ensemble A+B[@algorithm]

--- The models of an engine's `models list --json` file: a sequence of {name, family,
--- stems (count), installed (boolean)}, or nil when the file is missing or not a list.
function Settings.read_models(path)
  local text = path and U.read_file(path)
  if not text then return nil end
  local ok, rows = pcall(J.decode, text)
  if not ok or type(rows) ~= "table" then return nil end
  local out = {}
  for _, r in ipairs(rows) do
    if type(r) == "table" and type(r.name) == "string" and r.name:match(NAME) then
      out[#out + 1] = { name = r.name, family = tostring(r.family or "?"),
                        stems = type(r.stems) == "table" and #r.stems or 0,
                        installed = type(r.installed) == "string" }
    end
  end
  if #out == 0 then return nil end
  return out
end

--- Whether `name` is one of `models`, or an ensemble (A+B[@algorithm]) of them.
local function known(models, name)
  local names = {}
  for _, m in ipairs(models) do names[m.name] = true end
  if names[name] then return true end
  local members = name:match("^([^@]+)") or name
  if not members:find("+", 1, true) then return false end
  for member in (members .. "+"):gmatch("([^+]*)%+") do
    if not names[member] then return false end
  end
  return true
end

--- The model menu's fields and the name each one picks ("" = the default).
function Settings.menu_fields(models, current)
  local labels, picks = {}, {}
  local function add(label, pick)
    labels[#labels + 1] = (pick == current and "!" or "") .. label
    picks[#picks + 1] = pick
  end
  add("Default for the stem count", "")
  for _, m in ipairs(models) do
    add(string.format("%s  (%s, %d stems)%s", m.name, m.family, m.stems,
      m.installed and "" or " - not installed"), m.name)
  end
  if current ~= "" and not known(models, current) then
    add("Keep " .. current .. " (not in the engine's list)", current)
  end
  return labels, picks
end

--- The model menu (gfx.showmenu): the picked name ("" = default), or nil when dismissed.
function Settings.choose_model(models, current)
  local labels, picks = Settings.menu_fields(models, current)
  gfx.init("stembridge: model", 0, 0)
  gfx.x, gfx.y = 0, 0
  local pick = gfx.showmenu(table.concat(labels, "|"))
  gfx.quit()
  return picks[pick]
end

--- Check the dialog's answers; returns {key -> value} or nil, a message saying what to
--- fix. With `models` (the engine's list), the model must be one of them.
function Settings.parse_settings(csv, models)
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
  if out.model ~= "" and not out.model:match(NAME) then
    return nil, "Model: a model name such as htdemucs (see: stembridge models list)."
  end
  if out.model ~= "" and models and not known(models, out.model) then
    local names = {}
    for _, m in ipairs(models) do names[#names + 1] = m.name end
    return nil, "Model: the engine has no model " .. out.model .. ". It has: "
      .. table.concat(names, ", ") .. "."
  end
  for item in (out.colors .. ";"):gmatch("([^;]*);") do
    if item:match("%S") and not item:match("^%s*%w+%s*=%s*#?%x%x%x%x%x%x%s*$") then
      return nil, "Stem colors: write them as vocals=#E0533F;drums=#E8A33A (not " .. item .. ")."
    end
  end
  return out
end

--- The settings dialog: invalid answers are explained and asked again; Cancel changes
--- nothing. `models`: the engine's list (or nil); `model`: the model field's value
--- (default: the saved one). Returns true when the settings were saved.
function Settings.settings_dialog(models, model)
  local captions, current = {}, {}
  for i, f in ipairs(FIELDS) do
    captions[i] = f.caption
    local v = U.get_setting(f.key)
    if f.yn then v = v == "1" and "y" or "n" end
    if f.key == "model" and model then v = model end
    current[i] = v
  end
  local csv = table.concat(current, "|")
  while true do
    local ok, answer = reaper.GetUserInputs("stembridge settings", #FIELDS,
      table.concat(captions, ",") .. ",separator=|,extrawidth=250", csv)
    if not ok then return false end
    local values, err = Settings.parse_settings(answer, models)
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

--- The model menu (when a list is known), then the dialog.
local function open(models)
  if not models then
    U.console("the engine's model list is not available: type a model name "
      .. "(stembridge models list shows them), or leave it empty for the default")
    return Settings.settings_dialog(nil)
  end
  local model = Settings.choose_model(models, U.get_setting("model"))
  if model == nil then return false end
  return Settings.settings_dialog(models, model)
end

--- Remove the model lists earlier runs asked for and never read (models-<id>.json).
local function remove_stale(spool)
  local stale, i = {}, 0
  while true do
    local name = reaper.EnumerateFiles(spool, i)
    if not name then break end
    if name:match("^models%-%x+%.json$") then stale[#stale + 1] = U.join(spool, name) end
    i = i + 1
  end
  for _, path in ipairs(stale) do os.remove(path) end
end

--- The Settings action: ask the engine for its models (in the background), wait for the
--- list in a defer loop (at most MODELS_TIMEOUT), then the menu and the dialog.
function Settings.settings_action()
  local spool, why = E.spool_dir()
  if not spool then return open(nil), why end
  local last = U.join(spool, Settings.MODELS_FILE)
  remove_stale(spool)
  local fresh = U.join(spool, "models-" .. U.new_id() .. ".json")
  local launched, err = E.launch({ "models", "list", "--json", "--out", fresh })
  if not launched then
    U.console("cannot ask the engine for its models: " .. tostring(err))
    return open(Settings.read_models(last))
  end
  local t0 = U.now()
  local function wait()
    local models = Settings.read_models(fresh)
    if models then
      U.write_file_atomic(last, U.read_file(fresh))
      os.remove(fresh)
      return open(models)
    end
    if U.now() - t0 > Settings.MODELS_TIMEOUT then
      U.console("the engine did not list its models within "
        .. math.floor(Settings.MODELS_TIMEOUT) .. " s; using the list it gave last time")
      return open(Settings.read_models(last))
    end
    reaper.defer(wait)
  end
  wait()
end

return Settings
