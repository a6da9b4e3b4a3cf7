-- Closed-loop load for wrk (LuaJIT), driven by bench/lib/wrk.ts.
--
-- Environment:
--   BENCH_REQUESTS  file of pre-built requests, one a line: METHOD \t PATH \t AUTHORIZATION \t CONTENT-TYPE \t BODY
--                   (empty fields are left out); written by the benchmark
--   BENCH_AMOUNT    requests to send in all, split evenly over the threads
--   BENCH_THREADS   wrk's -t (init() of a thread runs before the next thread's setup(), so it cannot count them)
--   BENCH_CYCLE     "1": every thread sends its requests over and over (the hot rows: one line);
--                   otherwise thread k of n takes lines k+1, k+1+n, ... (a disjoint slice, so an uncached
--                   request is never sent twice) and stops when its slice or its share of the amount ends
--
-- Each thread writes "wrk-thread-done <id>" to stderr when it stops (the benchmark then ends wrk with
-- SIGINT rather than waiting out -d). done() prints one JSON line on stdout: requests, duration (us),
-- latency percentiles (us) and wrk's error counts.
local requests = {}
local amount = 0
local sent = 0
local index = 0
local id = 0
local stopped = false
local threads = 0

function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

function init(args)
  id = tonumber(wrk.thread:get("id"))
  local count = tonumber(os.getenv("BENCH_THREADS"))
  local cycle = os.getenv("BENCH_CYCLE") == "1"
  local total = tonumber(os.getenv("BENCH_AMOUNT"))
  amount = math.floor(total / count) + ((id < total % count) and 1 or 0)
  local n = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    if cycle or n % count == id then
      local method, path, auth, ctype, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {}
      if auth ~= "" then headers["Authorization"] = auth end
      if ctype ~= "" then headers["Content-Type"] = ctype end
      requests[#requests + 1] = wrk.format(method, path, headers, body ~= "" and body or nil)
    end
    n = n + 1
  end
  if not cycle and #requests < amount then amount = #requests end
end

function request()
  if sent >= amount then
    if not stopped then
      stopped = true
      io.stderr:write("wrk-thread-done " .. id .. "\n")
      io.stderr:flush()
      wrk.thread:stop()
    end
    -- wrk must send something; the loop stops before this one's answer is read.
    return wrk.format("GET", "/healthz")
  end
  sent = sent + 1
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
      '"status_errors":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
