-- wrk script: NDJSON bodies of 1 000 events (what Vector's and Fluent Bit's http outputs
-- send), each event with a unique event_id.
-- Usage: wrk -t2 -c64 -d10s -s bench/post_ndjson.lua http://127.0.0.1:PORT/
local counter = 0
local threads = {}
local per_body = 1000

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-ndjson"
end

function request()
  counter = counter + 1
  local lines = {}
  for i = 1, per_body do
    lines[i] = string.format(
      '{"message":"ERROR [PACT:bench:m%d] upstream timeout","event_id":"t%d-%d-%d"}',
      i % 50, tid, counter, i)
  end
  return wrk.format(nil, nil, nil, table.concat(lines, "\n"))
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
  io.write(string.format("acked %d non2xx %d events_acked %d p50_ms %.2f p99_ms %.2f\n",
    ok, bad, ok * per_body, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
