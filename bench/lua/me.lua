-- GET /api/auth/me with a user access token (BENCH_ACCESS_TOKEN, set by run_bench.py).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")

wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_ACCESS_TOKEN"), "BENCH_ACCESS_TOKEN unset")
