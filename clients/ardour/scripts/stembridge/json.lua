-- stembridge for Ardour, stage "json": JSON for the request, reply, manifest and job
-- files (Lua 5.3). encode(value) -> text; decode(text) -> value or nil, message.
-- Arrays are tables with keys 1..n (an empty table encodes as {}); null decodes to nil.

local J = {}

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
              ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESC[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  return n > 0 and n == #t
end

local function encode(v, out)
  local kind = type(v)
  if kind == "nil" then out[#out + 1] = "null"
  elseif kind == "boolean" then out[#out + 1] = tostring(v)
  elseif kind == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("json: cannot encode " .. v) end
    out[#out + 1] = math.type(v) == "integer" and tostring(v) or string.format("%.17g", v)
  elseif kind == "string" then out[#out + 1] = encode_string(v)
  elseif kind == "table" then
    if is_array(v) then
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        encode(x, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = encode_string(k) .. ":"
        local x = v[k]
        if x == nil then x = v[tonumber(k)] end
        encode(x, out)
      end
      out[#out + 1] = "}"
    end
  else
    error("json: cannot encode a " .. kind)
  end
end

function J.encode(v)
  local out = {}
  encode(v, out)
  return table.concat(out)
end

local function utf8_of(code)
  return utf8.char(code)
end

--- Decode `text`; returns the value, or nil and a message (never raises).
function J.decode(text)
  if type(text) ~= "string" then return nil, "not a string" end
  local pos = 1
  local function fail(what) error({ json = what .. " at byte " .. pos }) end
  local function ws() pos = text:find("[^ \t\r\n]", pos) or (#text + 1) end
  local value
  local function str()
    local out, i = {}, pos + 1
    while true do
      local j = text:find('["\\]', i)
      if not j then fail("unterminated string") end
      out[#out + 1] = text:sub(i, j - 1)
      if text:sub(j, j) == '"' then pos = j + 1 return table.concat(out) end
      local c = text:sub(j + 1, j + 1)
      if c == "u" then
        local code = tonumber(text:sub(j + 2, j + 5), 16) or fail("bad \\u escape")
        local used = 6
        if code >= 0xD800 and code < 0xDC00 and text:sub(j + 6, j + 7) == "\\u" then
          local low = tonumber(text:sub(j + 8, j + 11), 16) or fail("bad \\u escape")
          code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
          used = 12
        end
        out[#out + 1] = utf8_of(code)
        i = j + used
      else
        local map = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
        out[#out + 1] = map[c] or c
        i = j + 2
      end
    end
  end
  value = function()
    ws()
    local c = text:sub(pos, pos)
    if c == "{" then
      local obj = {}
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == "}" then pos = pos + 1 return obj end
      while true do
        ws()
        if text:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = str()
        ws()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        obj[k] = value()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return obj end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      local arr = {}
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == "]" then pos = pos + 1 return arr end
      while true do
        arr[#arr + 1] = value()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return arr end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then return str()
    elseif text:sub(pos, pos + 3) == "true" then pos = pos + 4 return true
    elseif text:sub(pos, pos + 4) == "false" then pos = pos + 5 return false
    elseif text:sub(pos, pos + 3) == "null" then pos = pos + 4 return nil
    end
    local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not num or num == "" then fail("unexpected character") end
    pos = pos + #num
    return math.tointeger(tonumber(num)) or tonumber(num)
  end
  local ok, result = pcall(function()
    local v = value()
    ws()
    if pos <= #text then fail("trailing characters") end
    return v
  end)
  if ok then return result end
  if type(result) == "table" then return nil, result.json end
  return nil, tostring(result)
end

return J
