-- stembridge protocol for Lua 5.4: OSC 1.0 messages and msgpack payloads, as specified
-- in PROTOCOL.md (version 1). Pure Lua, no REAPER calls. Not shipped to REAPER (its Lua
-- has no sockets; the scripts use request files): a Lua reference of the wire format,
-- run by tests/clients/test_lua_protocol.py through lupa against the golden vectors.
--
-- Decoded msgpack maps keep their key order (field `__order`) and decoded arrays are
-- marked, so a value can be re-encoded byte for byte; nil inside payloads is `P.null`.

local P = {}

P.PROTOCOL_VERSION = 1
P.null = setmetatable({}, { __tostring = function() return "null" end })

local ARRAY = { __name = "msgpack.array" }
local MAP = { __name = "msgpack.map" }

--- An ordered map for encoding: P.map({"a", "b"}, {a = 1, b = 2}).
function P.map(keys, values)
  local t = setmetatable({ __order = keys }, MAP)
  for _, k in ipairs(keys) do t[k] = values[k] end
  return t
end

--- An array for encoding (so an empty table is an array, not a map).
function P.array(items)
  return setmetatable(items or {}, ARRAY)
end

function P.is_array(v) return getmetatable(v) == ARRAY end
function P.is_map(v) return getmetatable(v) == MAP end

-------------------------------------------------------------------------- msgpack

local function mp_decode(s, pos)
  local b = s:byte(pos)
  if b == nil then error("msgpack: truncated", 0) end
  local function str(n, at)
    if at + n - 1 > #s then error("msgpack: truncated string", 0) end
    return s:sub(at, at + n - 1), at + n
  end
  local function seq(n, at, is_map)
    local out = setmetatable(is_map and { __order = {} } or {}, is_map and MAP or ARRAY)
    for i = 1, n do
      if is_map then
        local k; k, at = mp_decode(s, at)
        if type(k) ~= "string" then error("msgpack: map keys must be strings", 0) end
        local v; v, at = mp_decode(s, at)
        out.__order[#out.__order + 1] = k
        out[k] = v
      else
        out[i], at = mp_decode(s, at)
      end
    end
    return out, at
  end
  if b <= 0x7f then return b, pos + 1 end
  if b >= 0xe0 then return b - 0x100, pos + 1 end
  if b >= 0xa0 and b <= 0xbf then return str(b - 0xa0, pos + 1) end
  if b >= 0x90 and b <= 0x9f then return seq(b - 0x90, pos + 1, false) end
  if b >= 0x80 and b <= 0x8f then return seq(b - 0x80, pos + 1, true) end
  if b == 0xc0 then return P.null, pos + 1 end
  if b == 0xc2 then return false, pos + 1 end
  if b == 0xc3 then return true, pos + 1 end
  local fmt = ({ [0xca] = ">f", [0xcb] = ">d", [0xcc] = ">I1", [0xcd] = ">I2",
                 [0xce] = ">I4", [0xcf] = ">I8", [0xd0] = ">i1", [0xd1] = ">i2",
                 [0xd2] = ">i4", [0xd3] = ">i8" })[b]
  if fmt then
    if pos + string.packsize(fmt) > #s then error("msgpack: truncated number", 0) end
    local v, nxt = string.unpack(fmt, s, pos + 1)
    return v, nxt
  end
  local lenfmt = ({ [0xd9] = ">I1", [0xda] = ">I2", [0xdb] = ">I4", [0xc4] = ">I1",
                    [0xc5] = ">I2", [0xc6] = ">I4", [0xdc] = ">I2", [0xdd] = ">I4",
                    [0xde] = ">I2", [0xdf] = ">I4" })[b]
  if lenfmt then
    if pos + string.packsize(lenfmt) > #s then error("msgpack: truncated length", 0) end
    local n, at = string.unpack(lenfmt, s, pos + 1)
    if b == 0xdc or b == 0xdd then return seq(n, at, false) end
    if b == 0xde or b == 0xdf then return seq(n, at, true) end
    return str(n, at) -- str or bin: both are Lua strings
  end
  error(string.format("msgpack: unsupported type byte 0x%02x", b), 0)
end

--- Decode one msgpack value from string `s`; errors (a message string) on bad input.
function P.unpack(s)
  local v, pos = mp_decode(s, 1)
  if pos ~= #s + 1 then error("msgpack: trailing bytes", 0) end
  return v
end

local function mp_encode(v, out)
  local t = type(v)
  if v == P.null or v == nil then out[#out + 1] = "\xc0"
  elseif t == "boolean" then out[#out + 1] = v and "\xc3" or "\xc2"
  elseif math.type(v) == "integer" then
    if v >= 0 then
      if v <= 0x7f then out[#out + 1] = string.char(v)
      elseif v <= 0xff then out[#out + 1] = "\xcc" .. string.pack(">I1", v)
      elseif v <= 0xffff then out[#out + 1] = "\xcd" .. string.pack(">I2", v)
      elseif v <= 0xffffffff then out[#out + 1] = "\xce" .. string.pack(">I4", v)
      else out[#out + 1] = "\xcf" .. string.pack(">I8", v) end
    else
      if v >= -32 then out[#out + 1] = string.char(v + 0x100)
      elseif v >= -0x80 then out[#out + 1] = "\xd0" .. string.pack(">i1", v)
      elseif v >= -0x8000 then out[#out + 1] = "\xd1" .. string.pack(">i2", v)
      elseif v >= -0x80000000 then out[#out + 1] = "\xd2" .. string.pack(">i4", v)
      else out[#out + 1] = "\xd3" .. string.pack(">i8", v) end
    end
  elseif t == "number" then out[#out + 1] = "\xcb" .. string.pack(">d", v)
  elseif t == "string" then
    local n = #v
    if n <= 31 then out[#out + 1] = string.char(0xa0 + n)
    elseif n <= 0xff then out[#out + 1] = "\xd9" .. string.pack(">I1", n)
    elseif n <= 0xffff then out[#out + 1] = "\xda" .. string.pack(">I2", n)
    else out[#out + 1] = "\xdb" .. string.pack(">I4", n) end
    out[#out + 1] = v
  elseif t == "table" and getmetatable(v) == MAP then
    local keys = v.__order
    local n = #keys
    out[#out + 1] = n <= 15 and string.char(0x80 + n) or ("\xde" .. string.pack(">I2", n))
    for _, k in ipairs(keys) do mp_encode(k, out); mp_encode(v[k], out) end
  elseif t == "table" then
    local n = #v
    out[#out + 1] = n <= 15 and string.char(0x90 + n) or ("\xdc" .. string.pack(">I2", n))
    for i = 1, n do mp_encode(v[i], out) end
  else
    error("msgpack: cannot encode a " .. t, 0)
  end
end

--- msgpack bytes of `v` (maps must be P.map(...) or decoded maps, to fix the key order).
function P.pack(v)
  local out = {}
  mp_encode(v, out)
  return table.concat(out)
end

-------------------------------------------------------------------------- OSC

local function pad4(n) return (4 - n % 4) % 4 end

local function osc_string(s)
  if s:find("\0", 1, true) then error("OSC strings cannot contain NUL", 0) end
  return s .. string.rep("\0", 4 - #s % 4)
end

--- One OSC message: `tags` like ",siif" (without values for T F N), `args` in order.
--- A `b` argument is a Lua string of bytes, or a table (packed as msgpack).
function P.encode(address, tags, args)
  local out = { osc_string(address), osc_string(tags) }
  local i = 0
  for tag in tags:sub(2):gmatch(".") do
    if tag ~= "T" and tag ~= "F" and tag ~= "N" then i = i + 1 end
    local a = args[i]
    if tag == "i" then out[#out + 1] = string.pack(">i4", a)
    elseif tag == "f" then out[#out + 1] = string.pack(">f", a)
    elseif tag == "s" then out[#out + 1] = osc_string(a)
    elseif tag == "b" then
      local blob = type(a) == "table" and P.pack(a) or a
      out[#out + 1] = string.pack(">i4", #blob) .. blob .. string.rep("\0", pad4(#blob))
    elseif tag ~= "T" and tag ~= "F" and tag ~= "N" then
      error("OSC: unsupported type tag " .. tag, 0)
    end
  end
  return table.concat(out)
end

local function read_string(s, pos)
  local z = s:find("\0", pos, true)
  if not z then error("OSC: unterminated string", 0) end
  local text = s:sub(pos, z - 1)
  if not utf8.len(text) then error("OSC: string is not UTF-8", 0) end
  return text, z + 1 + pad4(z - pos + 1)
end

--- Decode one OSC message: returns address, tags, args (blobs as byte strings; T/F/N as
--- true/false/P.null). Errors (a message string) on anything malformed.
function P.decode(s)
  if #s < 8 or #s % 4 ~= 0 then error("OSC: bad datagram length", 0) end
  local address, pos = read_string(s, 1)
  if address:sub(1, 1) ~= "/" then error("OSC: address must start with '/'", 0) end
  local tags = ","
  if pos <= #s then tags, pos = read_string(s, pos) end
  if tags:sub(1, 1) ~= "," then error("OSC: missing type tags", 0) end
  local args = {}
  for tag in tags:sub(2):gmatch(".") do
    local v
    if tag == "i" or tag == "f" then
      if pos + 3 > #s then error("OSC: truncated argument", 0) end
      v, pos = string.unpack(tag == "i" and ">i4" or ">f", s, pos)
    elseif tag == "s" then v, pos = read_string(s, pos)
    elseif tag == "b" then
      if pos + 3 > #s then error("OSC: truncated blob size", 0) end
      local n; n, pos = string.unpack(">i4", s, pos)
      if n < 0 or pos + n - 1 > #s then error("OSC: blob size exceeds the datagram", 0) end
      v = s:sub(pos, pos + n - 1)
      pos = pos + n + pad4(n)
    elseif tag == "T" then v = true
    elseif tag == "F" then v = false
    elseif tag == "N" then v = P.null
    else error("OSC: unsupported type tag " .. tag, 0) end
    args[#args + 1] = v
  end
  if pos ~= #s + 1 then error("OSC: trailing bytes", 0) end
  return address, tags, args
end

-------------------------------------------------------------------------- JSON (writer)

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r",
                    ["\t"] = "\\t" }
    return named[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

--- JSON text of a decoded value, map keys in wire order (used by tests and logs).
function P.to_json(v)
  local t = type(v)
  if v == P.null or v == nil then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif math.type(v) == "integer" then return string.format("%d", v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    local text = string.format("%.17g", v)
    if not text:find("[%.eEn]") then text = text .. ".0" end -- keep floats floats
    return text
  elseif t == "string" then return json_string(v)
  elseif getmetatable(v) == MAP then
    local parts = {}
    for _, k in ipairs(v.__order) do parts[#parts + 1] = json_string(k) .. ":" .. P.to_json(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  else
    local parts = {}
    for i = 1, #v do parts[i] = P.to_json(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
end

return P
