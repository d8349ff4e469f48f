-- wrk script for orgd: PATCH (a random field or two of a random seeded org) or
-- GET by id, chosen by the BENCH_MODE environment variable. Every request carries
-- the bootstrap key, so it runs the real path: authenticate, load, validate, write
-- with its audit event. At the end it prints one JSON line the harness parses.
--
-- BENCH_MODE  patch | get | first | list | bare (bare: GET / on the bare axum
--             baseline; first: the first page of the organization list; list: a
--             page at a random cursor)
-- BENCH_IDS   file with one org id per line (patch and get), or one list cursor
--             per line (first and list)
-- BENCH_KEY   the API key (patch and get)

local mode = os.getenv("BENCH_MODE") or "get"
local key = os.getenv("BENCH_KEY") or ""
local ids = {}
-- Whole requests built in init (get and bare), one picked at random per request.
local prebuilt = nil
local patch_headers = {
  ["Authorization"] = "Bearer " .. key,
  ["Content-Type"] = "application/merge-patch+json",
}
local get_headers = { ["Authorization"] = "Bearer " .. key }

-- Each wrk thread runs its own Lua state, so each loads the ids and seeds its own
-- generator (differently, or both threads would send the same sequence).
function init(args)
  if mode ~= "bare" then
    for line in io.lines(os.getenv("BENCH_IDS")) do
      if #line > 0 then ids[#ids + 1] = line end
    end
  end
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  -- Requests that do not vary but by id are built once here, not per request:
  -- building one (wrk.format, its headers table, the path) cost wrk more CPU than
  -- sending it, and wrk shares the two cores with the server it measures. The
  -- bare baseline is built once as well, so both pay the same per request.
  if mode == "bare" then
    prebuilt = { wrk.format("GET", "/") }
  elseif mode == "get" then
    prebuilt = {}
    for i, id in ipairs(ids) do
      prebuilt[i] = wrk.format("GET", "/v1/organizations/" .. id, get_headers)
    end
  end
end

local zones = { "Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Sydney" }
local cities = { "Berlin", "Munich", "Paris", "Lyon", "Austin", "Osaka", "Leeds" }

-- One valid change each; the random numbers make a no-op (which writes nothing)
-- rare, so nearly every PATCH commits a new version and an event.
local fields = {
  function() return '"alias_name":"alias ' .. math.random(1, 1e9) .. '"' end,
  function() return '"description":"bench description ' .. math.random(1, 1e9) .. '"' end,
  function() return '"website":"https://example' .. math.random(1, 1e6) .. '.com/"' end,
  function() return '"is_business":' .. (math.random(0, 1) == 1 and "true" or "false") end,
  function() return '"time_zone":"' .. zones[math.random(#zones)] .. '"' end,
  function() return '"metadata":{"tier":"t' .. math.random(1, 1e6) .. '"}' end,
  function() return '"address":{"city":"' .. cities[math.random(#cities)] .. '","postal_code":"' .. math.random(10000, 99999) .. '"}' end,
}


function request()
  if prebuilt then
    return prebuilt[math.random(#prebuilt)]
  end
  if mode == "first" then
    return wrk.format("GET", "/v1/organizations?limit=50", get_headers)
  end
  if mode == "list" then
    return wrk.format("GET", "/v1/organizations?limit=50&cursor=" .. ids[math.random(#ids)], get_headers)
  end
  local path = "/v1/organizations/" .. ids[math.random(#ids)]
  local first = math.random(#fields)
  local body = fields[first]()
  if math.random(0, 1) == 1 then
    local second = math.random(#fields)
    if second ~= first then body = body .. "," .. fields[second]() end
  end
  return wrk.format("PATCH", path, patch_headers, "{" .. body .. "}")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
