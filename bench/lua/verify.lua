-- POST /api/2fa/verify with an API key (BENCH_API_KEY), one (userId, code) pair per request.
-- The pairs come from BENCH_PAIRS, a file of "userId code" lines that run_bench.py writes just
-- before the run. Thread i (0-based) of the BENCH_THREADS threads takes lines i+1, i+1+n,
-- i+1+2n, ...: the threads' slices are disjoint. BENCH_PAIRS_MODE:
--   cycle  walks the slice round and round (wrong codes: a user may fail any number of times);
--   once   sends each pair once (right codes: a user's time step is accepted only once); a thread
--          whose slice is used up stops, and the result says so ("exhausted_threads").
-- Every response's status is counted (the runner treats any status but BENCH_EXPECT as an error),
-- and the first unexpected body is kept. first_us/last_us (monotonic clock) bound the time the
-- requests were actually sent in, for a run that stopped early.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local cycle = os.getenv("BENCH_PAIRS_MODE") == "cycle"
local expect = tonumber((assert(os.getenv("BENCH_EXPECT"), "BENCH_EXPECT unset")))

-- main state: the threads, so that done() can collect their counters
local threads = {}
function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

-- thread state (read by bench_extra through thread:get)
statuses, first_us, last_us, sent, exhausted, slice = {}, 0, 0, 0, 0, 0
unexpected_body = ""
local prepared, position = {}, 1

function init(args)
  local n = tonumber((assert(os.getenv("BENCH_THREADS"), "BENCH_THREADS unset")))
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-API-Key"] = (assert(os.getenv("BENCH_API_KEY"), "BENCH_API_KEY unset")),
  }
  local i = 0
  for line in io.lines((assert(os.getenv("BENCH_PAIRS"), "BENCH_PAIRS unset"))) do
    if i % n == thread_index then
      local user, code = line:match("^(%S+) (%S+)$")
      local body = string.format('{"userId":"%s","code":"%s"}', user, code)
      prepared[#prepared + 1] = wrk.format("POST", nil, headers, body)
    end
    i = i + 1
  end
  slice = #prepared
  assert(slice > 0, "no pairs for thread " .. thread_index)
end

function request()
  if position > slice then
    if cycle then
      position = 1
    else
      -- Used up: stop this thread's event loop. It ends after the current iteration, so the
      -- request returned here (a harmless liveness probe) is written but never counted.
      exhausted = 1
      wrk.thread:stop()
      return wrk.format("GET", "/api/health/live", {})
    end
  end
  if first_us == 0 then first_us = now_us() end
  local r = prepared[position]
  position = position + 1
  sent = sent + 1
  return r
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  last_us = now_us()
  if status ~= expect and unexpected_body == "" then
    unexpected_body = status .. " " .. body:sub(1, 300)
  end
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

function bench_extra()
  local total, first, last, nsent, nexhausted, nslice, sample = {}, 0, 0, 0, 0, 0, ""
  for _, t in ipairs(threads) do
    for status, count in pairs(t:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
    local f, l = t:get("first_us"), t:get("last_us")
    if f > 0 and (first == 0 or f < first) then first = f end
    if l > last then last = l end
    nsent = nsent + t:get("sent")
    nexhausted = nexhausted + t:get("exhausted")
    nslice = nslice + t:get("slice")
    if sample == "" then sample = t:get("unexpected_body") end
  end
  local parts = {}
  for status, count in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%d', status, count)
  end
  return string.format(
    '{"statuses":{%s},"expect":%d,"pairs":%d,"sent":%d,"exhausted_threads":%d,' ..
    '"threads":%d,"first_request_us":%d,"last_response_us":%d,"unexpected_sample":%s}',
    table.concat(parts, ","), expect, nslice, nsent, nexhausted, #threads, first, last,
    json_string(sample))
end
