-- @noindex
-- JSON for stembridge's REAPER scripts (Lua 5.4, no REAPER calls): decodes the engine's
-- manifest.json and reply files, encodes the scripts' request files and saved job records.
--
-- decode(text) -> value | nil, error message. Objects become tables with string keys,
-- arrays become sequences; JSON null becomes J.null (so arrays keep their length).
-- encode(value) -> text. Tables with a [1] entry, or marked with J.array, are arrays;
-- other tables are objects, written with their keys sorted (stable output).

local J = {}

J.null = setmetatable({}, { __tostring = function() return "null" end })
local ARRAY = {}

--- Mark an (empty) table as a JSON array.
function J.array(t) return setmetatable(t or {}, ARRAY) end

local ESC = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
              r = "\r", t = "\t" }

local function decode_error(text, pos, what)
  local line = select(2, text:sub(1, pos):gsub("\n", "")) + 1
  error({ json = string.format("invalid JSON at line %d (byte %d): %s", line, pos, what) })
end

local function skip(text, pos)
  return text:find("[^ \t\r\n]", pos) or #text + 1
end

local parse_value

local function parse_string(text, pos)
  local out, i = {}, pos + 1
  while true do
    local j = text:find('["\\%c]', i)
    if not j then decode_error(text, pos, "unterminated string") end
    out[#out + 1] = text:sub(i, j - 1)
    local c = text:sub(j, j)
    if c == '"' then return table.concat(out), j + 1 end
    if c ~= "\\" then decode_error(text, j, "control character in string") end
    local e = text:sub(j + 1, j + 1)
    if e == "u" then
      local hex = text:match("^%x%x%x%x", j + 2)
      if not hex then decode_error(text, j, "bad \\u escape") end
      local cp, nxt = tonumber(hex, 16), j + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local lo = text:match("^\\u(%x%x%x%x)", nxt)
        local low = lo and tonumber(lo, 16)
        if low and low >= 0xDC00 and low <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
          nxt = nxt + 6
        else
          cp = 0xFFFD
        end
      elseif cp >= 0xDC00 and cp <= 0xDFFF then
        cp = 0xFFFD
      end
      out[#out + 1] = utf8.char(cp)
      i = nxt
    else
      local r = ESC[e]
      if not r then decode_error(text, j, "bad escape \\" .. e) end
      out[#out + 1] = r
      i = j + 2
    end
  end
end

local function parse_number(text, pos)
  local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  local value = num and tonumber(num)
  if not value then decode_error(text, pos, "bad number") end
  return value, pos + #num
end

function parse_value(text, pos, depth)
  if depth > 200 then decode_error(text, pos, "nested too deeply") end
  pos = skip(text, pos)
  local c = text:sub(pos, pos)
  if c == "{" then
    local obj = {}
    pos = skip(text, pos + 1)
    if text:sub(pos, pos) == "}" then return obj, pos + 1 end
    while true do
      pos = skip(text, pos)
      if text:sub(pos, pos) ~= '"' then decode_error(text, pos, "expected a key") end
      local key
      key, pos = parse_string(text, pos)
      pos = skip(text, pos)
      if text:sub(pos, pos) ~= ":" then decode_error(text, pos, "expected ':'") end
      obj[key], pos = parse_value(text, pos + 1, depth + 1)
      pos = skip(text, pos)
      c = text:sub(pos, pos)
      if c == "}" then return obj, pos + 1 end
      if c ~= "," then decode_error(text, pos, "expected ',' or '}'") end
      pos = pos + 1
    end
  elseif c == "[" then
    local arr = J.array({})
    pos = skip(text, pos + 1)
    if text:sub(pos, pos) == "]" then return arr, pos + 1 end
    while true do
      arr[#arr + 1], pos = parse_value(text, pos, depth + 1)
      pos = skip(text, pos)
      c = text:sub(pos, pos)
      if c == "]" then return arr, pos + 1 end
      if c ~= "," then decode_error(text, pos, "expected ',' or ']'") end
      pos = pos + 1
    end
  elseif c == '"' then
    return parse_string(text, pos)
  elseif c == "-" or c:match("%d") then
    return parse_number(text, pos)
  elseif text:sub(pos, pos + 3) == "true" then return true, pos + 4
  elseif text:sub(pos, pos + 4) == "false" then return false, pos + 5
  elseif text:sub(pos, pos + 3) == "null" then return J.null, pos + 4
  end
  decode_error(text, pos, c == "" and "unexpected end" or ("unexpected '" .. c .. "'"))
end

--- Decode JSON text. Returns the value, or nil and a message (never raises).
function J.decode(text)
  if type(text) ~= "string" then return nil, "invalid JSON: not a string" end
  local ok, value, pos = pcall(parse_value, text, 1, 0)
  if not ok then
    if type(value) == "table" and value.json then return nil, value.json end
    return nil, "invalid JSON: " .. tostring(value)
  end
  if skip(text, pos) <= #text then
    return nil, string.format("invalid JSON: trailing data at byte %d", pos)
  end
  return value
end

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(ch)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r",
                    ["\t"] = "\\t" }
    return named[ch] or string.format("\\u%04x", ch:byte())
  end) .. '"'
end

--- Encode a value (nil and J.null -> null; integers stay integers).
function J.encode(v)
  local t = type(v)
  if v == nil or v == J.null then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif math.type(v) == "integer" then return string.format("%d", v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return string.format("%.17g", v)
  elseif t == "string" then return encode_string(v)
  elseif t == "table" then
    if getmetatable(v) == ARRAY or v[1] ~= nil then
      local parts = {}
      for i = 1, #v do parts[i] = J.encode(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do
      if type(k) ~= "string" then error("JSON object keys must be strings") end
      keys[#keys + 1] = k
    end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = encode_string(k) .. ":" .. J.encode(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("cannot encode a " .. t .. " as JSON")
end

return J
