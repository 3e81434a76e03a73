-- privacyIDEA's POST /validate/check (bench/peers/privacyidea.py), driven exactly like verify.lua
-- (the same pairs file, BENCH_PAIRS_MODE, BENCH_EXPECT, BENCH_THREADS; BENCH_API_KEY is read but
-- not sent: /validate/check needs no key). Each "userId code" pair becomes
-- {"user": userId, "realm": BENCH_PI_REALM, "pass": code}, or with BENCH_PI_BY=serial
-- {"serial": userId, "pass": code} (each user's token has the userId as its serial). The tokens
-- have no PIN, so the pass is the code.
-- privacyIDEA answers 200 to right and wrong codes alike, with result.authentication ACCEPT or
-- REJECT. So that BENCH_EXPECT means the same as for the API, a 200 with ACCEPT is counted as 200,
-- one with REJECT as 401, and any other 200 (a challenge, say) as 299, an unexpected status
-- either way; other statuses count as themselves.
dofile(os.getenv("BENCH_LUA_DIR") .. "/verify.lua")

local realm = assert(os.getenv("BENCH_PI_REALM"), "BENCH_PI_REALM unset")
local by_serial = os.getenv("BENCH_PI_BY") == "serial"
local verify_init, verify_response = init, response

function init(args)
  -- verify.lua builds its requests with wrk.format in init: rewrite each one on its way.
  local format = wrk.format
  wrk.format = function(method, path, headers, body)
    local user, code = body:match('^{"userId":"(.*)","code":"(.*)"}$')
    assert(user, "unexpected body from verify.lua: " .. body)
    local pi_body
    if by_serial then
      pi_body = string.format('{"serial":"%s","pass":"%s"}', user, code)
    else
      pi_body = string.format('{"user":"%s","realm":"%s","pass":"%s"}', user, realm, code)
    end
    return format(method, path, { ["Content-Type"] = "application/json" }, pi_body)
  end
  verify_init(args)
  wrk.format = format
end

function response(status, headers, body)
  if status == 200 then
    if body:find('"authentication":%s*"ACCEPT"') then
      status = 200
    elseif body:find('"authentication":%s*"REJECT"') then
      status = 401
    else
      status = 299
    end
  end
  verify_response(status, headers, body)
end
