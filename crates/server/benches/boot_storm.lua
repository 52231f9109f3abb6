-- wrk's side of the boot storm (boot_storm.rs): every thread loads the request bodies, one
-- device per line, and its connections cycle through the devices, thread t taking the lines
-- t, t + T, t + 2T …; the requests are built once, up front, so that the load generator spends
-- its time sending them. `done` prints one JSON line that the bench reads.
--
--   wrk -t T -c C -d 20s -s boot_storm.lua http://HOST:PORT -- BODIES_FILE T

local threads = {}
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local requests = {}
local next_request = 1

function init(args)
  local path = args[1]
  local step = tonumber(args[2])
  local headers = { ["Content-Type"] = "application/json" }
  local line_number = 0
  for body in io.lines(path) do
    if line_number % step == index then
      requests[#requests + 1] = wrk.format("POST", "/device/v1/profile", headers, body)
    end
    line_number = line_number + 1
  end
end

function request()
  local r = requests[next_request]
  next_request = next_request + 1
  if next_request > #requests then
    next_request = 1
  end
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"durationUs":%d,"non2xx":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"timeouts":%d,"p50Us":%d,"p99Us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
