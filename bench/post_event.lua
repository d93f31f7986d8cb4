-- wrk script: one JSON event per request, each with a unique event_id (thread id + counter),
-- so that Sentinel counts every acknowledged request once.
-- Usage: wrk -t2 -c64 -d10s -s bench/post_event.lua http://127.0.0.1:PORT/
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

function request()
  counter = counter + 1
  local body = string.format(
    '{"error":"ERROR [PACT:bench:m%d] payment failed for order","event_id":"t%d-%d"}',
    counter % 50, tid, counter)
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
  io.write(string.format("acked %d non2xx %d p50_ms %.2f p99_ms %.2f\n",
    ok, bad, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
