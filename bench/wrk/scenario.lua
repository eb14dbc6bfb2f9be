-- One wrk script for every scenario, chosen by the SCENARIO environment variable.
-- TOKEN: the API key; MIN_ID/MAX_ID: the widget id range; ADJUST_IDS: a file of
-- widget ids with enough stock that +1/-1 pairs can never take one below zero.
local scenario = os.getenv("SCENARIO")
local auth = "Token " .. os.getenv("TOKEN")
local min_id = tonumber(os.getenv("MIN_ID"))
local max_id = tonumber(os.getenv("MAX_ID"))
local words = {"steel", "brass", "compact", "precision", "mini", "pro", "classic", "coated"}
local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("thread_id", counter)
   table.insert(threads, thread)
end

local adjust_ids = {}
local step = 0
local cursor = 0

function init(args)
   math.randomseed(os.time() * 100 + thread_id)
   wrk.headers["Authorization"] = auth
   wrk.headers["Accept"] = "application/json"
   if scenario == "adjust" or scenario == "batch" or scenario == "reserve" then
      for line in io.lines(os.getenv("ADJUST_IDS")) do table.insert(adjust_ids, tonumber(line)) end
   end
   -- Each thread walks its own half of the table.
   cursor = min_id + math.floor((max_id - min_id) * (thread_id - 1) / 2)
end

local pending = nil
-- reserve: what to send next, learnt from the answers (the connections of a thread
-- interleave, so this is a queue): commit a reservation just made, then receive the unit
-- it sold, so that stock ends as it started.
local jobs = {}

local function post(path, body)
   -- A headers table given to wrk.format replaces wrk.headers, so pass them all.
   local headers = {["Content-Type"] = "application/json"}
   for name, value in pairs(wrk.headers) do headers[name] = value end
   return wrk.format("POST", path, headers, body)
end

request = function()
   if scenario == "list" then
      return wrk.format("GET", "/api/widgets/?limit=50&offset=" .. (math.random(0, 19) * 50))
   elseif scenario == "filtered" then
      return wrk.format("GET", "/api/widgets/?search=" .. words[math.random(#words)] .. "&low_stock=true&limit=50")
   elseif scenario == "retrieve" then
      return wrk.format("GET", "/api/widgets/" .. math.random(min_id, max_id) .. "/")
   elseif scenario == "adjust" then
      -- received/sold pairs: every +1 is followed by a -1 on the same widget.
      local id, body
      if pending == nil then
         pending = adjust_ids[math.random(#adjust_ids)]
         id, body = pending, '{"delta": 1, "reason": "received", "note": "bench"}'
      else
         id, body = pending, '{"delta": -1, "reason": "sold", "note": "bench"}'
         pending = nil
      end
      -- A headers table given to wrk.format replaces wrk.headers, so pass them all.
      local headers = {["Content-Type"] = "application/json"}
      for name, value in pairs(wrk.headers) do headers[name] = value end
      return wrk.format("POST", "/api/widgets/" .. id .. "/adjust/", headers, body)
   elseif scenario == "batch" then
      -- 10 received +1 on random widgets, then 10 sold -1 on the same widgets.
      local delta, reason = -1, "sold"
      if pending == nil then
         pending = {}
         for i = 1, 10 do pending[i] = adjust_ids[math.random(#adjust_ids)] end
         delta, reason = 1, "received"
      end
      local items = {}
      for i, id in ipairs(pending) do
         items[i] = string.format('{"widget": %d, "delta": %d, "reason": "%s", "note": "bench"}', id, delta, reason)
      end
      if delta < 0 then pending = nil end
      local headers = {["Content-Type"] = "application/json"}
      for name, value in pairs(wrk.headers) do headers[name] = value end
      return wrk.format("POST", "/api/adjustments/", headers, '{"items": [' .. table.concat(items, ", ") .. ']}')
   elseif scenario == "reserve" then
      -- reserve 1 unit -> commit it -> receive 1 unit back: three requests per cycle.
      local job = table.remove(jobs, 1)
      if job ~= nil and job.commit then
         return post("/api/reservations/" .. job.commit .. "/commit/", "{}")
      elseif job ~= nil and job.receive then
         return post("/api/widgets/" .. job.receive .. "/adjust/", '{"delta": 1, "reason": "received", "note": "bench"}')
      end
      local id = adjust_ids[math.random(#adjust_ids)]
      return post("/api/reservations/", string.format(
         '{"reference": "bench", "ttl_seconds": 900, "items": [{"widget": %d, "quantity": 1}]}', id))
   elseif scenario == "keyset" then
      local start = cursor
      cursor = cursor + 50
      if cursor > max_id then cursor = min_id end
      return wrk.format("GET", "/api/widgets/?limit=50&start=" .. start)
   end
   error("unknown SCENARIO " .. tostring(scenario))
end

if scenario == "reserve" then
   response = function(status, headers, body)
      if status ~= 201 then return end
      local id = body:match('^{"id":(%d+),"reference":')
      if body:find('"status":"active"', 1, true) and id then
         table.insert(jobs, {commit = id})
      elseif body:find('"status":"committed"', 1, true) then
         table.insert(jobs, {receive = body:match('"items":%[{"widget":(%d+)')})
      end
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d, "non2xx": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout, e.status))
end
