-- wrk script: one JSON event per request, every one a distinct error (its words differ in
-- letters, which the fingerprint keeps, not in digits, which it folds): each request makes
-- a new incident and a new event in the log.
-- Usage: wrk -t2 -c64 -d15s -s bench/post_distinct.lua http://127.0.0.1:PORT/
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

-- n in base 20 over the letters g..z (no hex letters, no digits).
local function word(n)
  local w = ""
  repeat
    w = w .. string.char(103 + n % 20)
    n = math.floor(n / 20)
  until n == 0
  return w
end

function request()
  counter = counter + 1
  local body = string.format('{"error":"ERROR distinct %s %s failed"}', word(tid), word(counter))
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = (ok or 0) + 1
  else
    bad = (bad or 0) + 1
  end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do
    ok = ok + (t:get("ok") or 0)
    bad = bad + (t:get("bad") or 0)
  end
  io.write(string.format("acked %d non2xx %d\n", ok, bad))
end
