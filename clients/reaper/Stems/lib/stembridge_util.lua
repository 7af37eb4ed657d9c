-- @noindex
-- stembridge for REAPER, stage "util": time, messages, files, paths, the user's settings
-- (ExtState "stembridge") and finding tracks and items by GUID. Loaded by
-- stembridge_core.lua; takes nothing, returns the table U.

local U = {}

U.EXT = "stembridge"              -- ExtState / ProjExtState section
U.MODELS_FILE = "models.json"    -- the engine's model list (Settings writes it), in the spool folder

U.DEFAULTS = {
  engine = "stembridge",          -- the stembridge command, or a python with stembridge
  model = "",                     -- "" = the engine's default for the stem count
  device = "auto",                -- engine device when the engine is started: auto|cpu|cuda|mps
  output_dir = "",                -- "" = the project's media folder
  folder_track = "1",
  mute_original = "1",
  colors = "vocals=#E0533F;drums=#E8A33A;bass=#4D8FE0;other=#8FBF4A;guitar=#B265D6;"
    .. "piano=#3FB8B0;instrumental=#8C8C8C",
}

--------------------------------------------------------------------------- utilities

--- Seconds (REAPER's precise clock).
function U.now() return reaper.time_precise() end

function U.console(text) reaper.ShowConsoleMsg("stembridge: " .. text .. "\n") end

function U.alert(text) reaper.MB(text, "stembridge", 0) end

local windows  -- (GetOS asked once)
function U.is_windows()
  if windows == nil then windows = reaper.GetOS():find("^Win") ~= nil end
  return windows
end

function U.join(a, b)
  if a:sub(-1) == "/" or a:sub(-1) == "\\" then return a .. b end
  return a .. (U.is_windows() and "\\" or "/") .. b
end

function U.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

--- Write a file atomically: a temporary name in the same folder, then rename.
function U.write_file_atomic(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return false, err end
  f:write(text)
  f:close()
  os.remove(path) -- Windows cannot rename over an existing file
  local ok, rerr = os.rename(tmp, path)
  if not ok then return false, rerr end
  return true
end

--- Code points that belong to the character before them: combining marks, variation
--- selectors, the zero-width joiner, emoji skin tones, tag characters.
local ATTACHED = { { 0x0300, 0x036F }, { 0x1AB0, 0x1AFF }, { 0x1DC0, 0x1DFF },
  { 0x200D, 0x200D }, { 0x20D0, 0x20FF }, { 0xFE00, 0xFE0F }, { 0xFE20, 0xFE2F },
  { 0x1F3FB, 0x1F3FF }, { 0xE0000, 0xE007F }, { 0xE0100, 0xE01EF } }

local function attached(cp)
  for _, r in ipairs(ATTACHED) do
    if cp >= r[1] and cp <= r[2] then return true end
  end
  return false
end

--- The user-perceived characters of `text` (strings of whole UTF-8 sequences); a byte
--- that is not valid UTF-8 becomes "_".
local function characters(text)
  local out, i, after_zwj = {}, 1, false
  while i <= #text do
    local b = text:byte(i)
    local n = b < 0x80 and 1 or b >= 0xF0 and 4 or b >= 0xE0 and 3 or b >= 0xC2 and 2 or 1
    local seq = text:sub(i, i + n - 1)
    local cp = (#seq == n and utf8.len(seq) == 1) and utf8.codepoint(seq) or nil
    if not cp then seq, n, cp = "_", 1, 0x5F end
    if #out > 0 and (after_zwj or attached(cp)) then
      out[#out] = out[#out] .. seq
    else
      out[#out + 1] = seq
    end
    after_zwj = cp == 0x200D
    i = i + n
  end
  return out
end

U.NAME_CHARS = 80                 -- item names in folder names: characters at most
U.NAME_BYTES = 200                -- and bytes (file systems allow 255 per name)

--- A name safe on every file system (item names become folder names): valid UTF-8, at
--- most NAME_CHARS characters and NAME_BYTES bytes, never cut inside a character (nor
--- between a character and its combining marks).
function U.safe_name(name)
  name = (name or ""):gsub('[%c<>:"/\\|?*]', "_"):gsub("^[%s%.]+", "")
  local kept, bytes = {}, 0
  for _, ch in ipairs(characters(name)) do
    if #kept >= U.NAME_CHARS or bytes + #ch > U.NAME_BYTES then break end
    kept[#kept + 1] = ch
    bytes = bytes + #ch
  end
  name = table.concat(kept):gsub("[%s%.]+$", "")
  if name == "" then name = "item" end
  return name
end

--- A new job record id: 16 lower-case hex digits.
function U.new_id()
  local guid = reaper.genGuid("")
  return (guid:gsub("[^%x]", ""):lower():sub(1, 16))
end

--------------------------------------------------------------------------- settings

function U.get_setting(key)
  if reaper.HasExtState(U.EXT, key) then return reaper.GetExtState(U.EXT, key) end
  return U.DEFAULTS[key]
end

function U.set_setting(key, value)
  reaper.SetExtState(U.EXT, key, tostring(value), true)
end

--- A yes/no setting ("1" or "0") as a boolean.
function U.flag(key) return U.get_setting(key) == "1" end

--- {stem -> native color | 0x1000000} from the colors setting ("vocals=#RRGGBB;...").
function U.stem_colors()
  local out = {}
  for stem, hex in U.get_setting("colors"):gmatch("(%w+)%s*=%s*#?(%x%x%x%x%x%x)") do
    local r, g, b = tonumber(hex:sub(1, 2), 16), tonumber(hex:sub(3, 4), 16),
      tonumber(hex:sub(5, 6), 16)
    out[stem] = reaper.ColorToNative(r, g, b) | 0x1000000
  end
  return out
end

--------------------------------------------------------------------------- projects

--- Every open project, in tab order.
function U.projects()
  local out, i = {}, 0
  while true do
    local proj = reaper.EnumProjects(i)
    if not proj then return out end
    out[#out + 1] = proj
    i = i + 1
  end
end

function U.find_track(proj, guid)
  for i = 0, reaper.CountTracks(proj) - 1 do
    local tr = reaper.GetTrack(proj, i)
    if reaper.GetTrackGUID(tr) == guid then return tr end
  end
end

function U.item_guid(item)
  return select(2, reaper.GetSetMediaItemInfo_String(item, "GUID", "", false))
end

--- The tag stembridge gives its items ("<record id>:gap", ":region:<frame>", ":final").
function U.item_tag(item)
  return select(2, reaper.GetSetMediaItemInfo_String(item, "P_EXT:stembridge", "", false))
end

function U.find_item(proj, guid)
  for t = 0, reaper.CountTracks(proj) - 1 do
    local tr = reaper.GetTrack(proj, t)
    for i = 0, reaper.CountTrackMediaItems(tr) - 1 do
      local it = reaper.GetTrackMediaItem(tr, i)
      if U.item_guid(it) == guid then return it end
    end
  end
end

return U
