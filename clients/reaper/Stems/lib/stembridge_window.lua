-- @noindex
-- stembridge for REAPER, stage "window": the small status window (REAPER's gfx API) of
-- the "Show split status" action. It lists the running splits, as the monitor publishes
-- them (stage "status"), with progress, time left, model and device, and a Cancel button
-- per job; it never blocks: one gfx frame per defer tick, redrawn only when something
-- changed. Closing it (its close box, Escape, or running the action again) leaves every
-- job running. Loaded by stembridge_core.lua with the util, status and monitor stages;
-- returns the table W.

local U, St, Mon = ...

local W = {}

W.TITLE = "stembridge: splits"
W.WIDTH, W.HEIGHT = 460, 220
W.FONT = 16            -- font size (px); gfx.texth follows it
W.PAD = 8
W.BUTTON = "Cancel"

local ESCAPE = 27

--- "42 % - 0:35 left", "starting...", "cancelling...": what a row says of its job.
function W.progress_text(row, asked)
  if asked or row.state == "cancelling" then return "cancelling..." end
  if row.state ~= "running" then return "starting..." end
  if not row.percent then return "separating..." end
  local text = string.format("%d %%", row.percent)
  local eta = tonumber(row.eta)
  if eta then text = text .. string.format(" - %d:%02d left", eta // 60, eta % 60) end
  return text
end

local state = { rows = {}, text = nil, alive = nil, w = nil, h = nil, buttons = {},
                asked = {}, cap = 0, dirty = true }

local function draw()
  local pad, th = W.PAD, gfx.texth
  gfx.set(0.13, 0.13, 0.13, 1)
  gfx.rect(0, 0, gfx.w, gfx.h, 1)
  state.buttons = {}
  gfx.set(0.9, 0.9, 0.9, 1)
  if #state.rows == 0 then
    gfx.x, gfx.y = pad, pad
    gfx.drawstr(state.alive and "No split is running."
      or "No split is running (run a split action to resume saved ones).")
    return
  end
  local row_h = 2 * th + 3 * pad
  local bw = gfx.measurestr(W.BUTTON) + 2 * pad
  for i, row in ipairs(state.rows) do
    local y = pad + (i - 1) * row_h
    local asked = state.asked[row.id]
    gfx.set(0.9, 0.9, 0.9, 1)
    gfx.x, gfx.y = pad, y
    gfx.drawstr(string.format("%s: %s", row.name, W.progress_text(row, asked)))
    gfx.set(0.65, 0.65, 0.65, 1)
    gfx.x, gfx.y = pad, y + th + pad // 2
    gfx.drawstr(string.format("%s stems - model %s - device %s", tostring(row.stems or "?"),
      tostring(row.model), tostring(row.device)))
    if not asked then
      local bx, by, bh = gfx.w - pad - bw, y, th + pad
      gfx.set(0.8, 0.35, 0.3, 1)
      gfx.rect(bx, by, bw, bh, 0)
      gfx.x, gfx.y = bx + pad, by + pad // 2
      gfx.drawstr(W.BUTTON)
      state.buttons[#state.buttons + 1] = { x = bx, y = by, w = bw, h = bh, id = row.id }
    end
    gfx.set(0.3, 0.3, 0.3, 1)
    gfx.line(pad, y + row_h - pad, gfx.w - pad, y + row_h - pad)
  end
end

--- A left click at (x, y): the Cancel button there, if any, cancels its job only.
local function click(x, y)
  for _, b in ipairs(state.buttons) do
    if x >= b.x and x < b.x + b.w and y >= b.y and y < b.y + b.h then
      St.ask_cancel(b.id)
      state.asked[b.id] = true
      state.dirty = true
      return
    end
  end
end

--- One frame: input, then a redraw if anything changed; false once the window is closed.
function W.frame()
  local char = gfx.getchar()
  if char < 0 or char == ESCAPE then return false end
  local cap = gfx.mouse_cap
  if cap & 1 == 1 and state.cap & 1 == 0 then click(gfx.mouse_x, gfx.mouse_y) end
  state.cap = cap
  local rows, text = St.read(state.text, state.rows)
  local alive = Mon.monitor_alive()
  if text ~= state.text or alive ~= state.alive or gfx.w ~= state.w or gfx.h ~= state.h then
    state.rows, state.text, state.alive, state.w, state.h = rows, text, alive, gfx.w, gfx.h
    local shown = {}
    for _, row in ipairs(rows) do shown[row.id] = true end
    for id in pairs(state.asked) do
      if not shown[id] then state.asked[id] = nil end  -- gone: the cancel was done
    end
    state.dirty = true
  end
  if state.dirty then
    draw()
    state.dirty = false
  end
  gfx.update()
  return true
end

local function loop()
  if W.frame() then
    reaper.defer(loop)
  else
    gfx.quit()
  end
end

--- The "Show split status" action: open the window (a second launch of the action
--- closes it: REAPER terminates the running instance).
function W.show()
  reaper.set_action_options(1)
  reaper.atexit(function() gfx.quit() end)
  gfx.clear = -1  -- the window keeps its picture between redraws
  gfx.init(W.TITLE, W.WIDTH, W.HEIGHT)
  gfx.setfont(1, "Arial", W.FONT)
  loop()
end

return W
