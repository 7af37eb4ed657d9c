-- Test driver for the stembridge Ardour scripts, run by ardour-lua (real Ardour,
-- headless): loads a session, runs the scenario named in $SB_SCENARIO with the real
-- library, steps the follow hook's tick until the jobs end, saves the session and writes
-- what happened to $SB_RESULT (JSON). Used by tests/clients/test_ardour.py.

local dir = os.getenv("STEMBRIDGE_ARDOUR_LIB")
local SB = dofile(dir .. "/core.lua")(dir)
local J, U = SB.json, SB.util

local session_dir, session_name = os.getenv("SB_SESSION_DIR"), os.getenv("SB_SESSION_NAME")
assert(load_session(session_dir, session_name), "cannot load the session")

local out = { steps = {}, messages = U.messages, runs = {} }

local function region_on(track_name)
  local route = Session:route_by_name(track_name)
  assert(not route:isnil(), "no track " .. track_name)
  for r in route:to_track():playlist():region_list():iter() do return r end
  error("no region on " .. track_name)
end

local function follow(limit_s, stop_when)
  local t0 = U.now()
  local ticks = 0
  while U.now() - t0 < limit_s do
    local active = SB.tick(0.008)
    ticks = ticks + 1
    if active == 0 or (stop_when and stop_when()) then break end
    ARDOUR.LuaAPI.usleep(20000)
  end
  return ticks
end

local function playhead(seconds)
  Session:request_locate(math.floor(seconds * Session:nominal_sample_rate()),
    false, ARDOUR.LocateTransportDisposition.MustStop, ARDOUR.TransportRequestSource.TRS_UI)
  for _ = 1, 50 do
    if Session:transport_sample() == math.floor(seconds * Session:nominal_sample_rate()) then break end
    ARDOUR.LuaAPI.usleep(10000)
  end
end

local scenario = os.getenv("SB_SCENARIO")
if scenario == "main" then
  playhead(4.0)
  local t0 = U.now()
  local started = SB.split({ region_on("Band"), region_on("Voice") }, 2)
  out.runs[#out.runs + 1] = { what = "split2", started = #started, action_s = U.now() - t0,
                              ticks = follow(120) }
  -- cancel mid-job: a 4-stem split of the mono region, cancelled once it runs
  started = SB.split({ region_on("Voice") }, 4)
  local rec = started[1]
  follow(60, function()
    local saved = J.decode(U.read_file(U.join(Session:path(), "stembridge/jobs/" .. rec.id .. ".json")) or "")
    return saved and saved.state == "running"
  end)
  out.runs[#out.runs + 1] = { what = "cancel", cancelled = SB.cancel_all(), job_id = rec.id }
  follow(5)
elseif scenario == "errors" then
  local region = region_on("Band")
  out.runs[#out.runs + 1] = { what = "nothing", started = #SB.split({}, 2) }
  local started = SB.split({ region }, 2)  -- the engine is missing ($STEMBRIDGE_ENGINE)
  out.runs[#out.runs + 1] = { what = "engine_missing", started = #started, ticks = follow(30) }
  os.remove(region:source(0):to_filesource():path())
  out.runs[#out.runs + 1] = { what = "file_missing", started = #SB.split({ region }, 2) }
  -- The installed scripts as Ardour reads them: the header, then the factory.
  out.scripts = {}
  local ls = io.popen("ls -1 " .. U.shell_word(os.getenv("SB_INSTALLED")))
  for name in ls:lines() do
    if name:match("%.lua$") then
      local header
      ardour = function(t) header = t end
      dofile(U.join(os.getenv("SB_INSTALLED"), name))
      out.scripts[name] = { type = header["type"], name = header.name,
                            factory = type(factory), signals = type(signals) }
      if name == "stembridge_cancel.lua" then factory()() end
    end
  end
  ls:close()
end

out.jobs = SB.jobs.all(true)
out.routes = {}
local member = {}
for g in Session:route_groups():iter() do
  for r in g:route_list():iter() do member[r:name()] = g:name() end
end
for r in Session:get_routes():iter() do
  local group = member[r:name()]
  out.routes[#out.routes + 1] = {
    name = r:name(), order = r:presentation_info_ptr():order(),
    color = r:presentation_info_ptr():color(), hidden = r:is_hidden(),
    active = r:active(), inputs = r:n_inputs():n_audio(),
    group = group }
end
out.rate = Session:nominal_sample_rate()
Session:save_state("", false, false, false)
assert(U.write_file_atomic(os.getenv("SB_RESULT"), J.encode(out)))
close_session()
