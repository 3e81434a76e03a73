-- Loaded by every scenario: at the end, print wrk's own summary as one JSON line
-- (prefixed BENCH_RESULT) that bench/run_bench.py parses. Latencies are in microseconds.
-- errors.status is wrk's count of responses with a status >= 400.
-- A scenario may define bench_extra(), returning a JSON object (as text) added as "extra".

local function num(x)
  if x ~= x or x == math.huge or x == -math.huge then return 0 end -- NaN/inf with no samples
  return x
end

function done(summary, latency, requests)
  local e = summary.errors
  local extra = ""
  if type(bench_extra) == "function" then
    extra = ',"extra":' .. bench_extra()
  end
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}%s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, num(latency.mean), num(latency.stdev), latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), extra))
end
