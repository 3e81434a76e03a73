-- POST /api/auth/login with a registered account and its right password
-- (BENCH_USERNAME / BENCH_PASSWORD, set by run_bench.py; both are [A-Za-z0-9_] only).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

local username = assert(os.getenv("BENCH_USERNAME"), "BENCH_USERNAME unset")
local password = assert(os.getenv("BENCH_PASSWORD"), "BENCH_PASSWORD unset")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"emailOrUsername":"%s","password":"%s"}', username, password)
