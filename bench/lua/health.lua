-- GET /api/health/live: no body, no credentials; only the shared report.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
