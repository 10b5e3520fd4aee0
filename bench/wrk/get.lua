-- GET /orders/{id}/ round-robin over the ids in `ids=<file>` (one per line), with a bearer
-- token: the cached read path. Each thread starts at a different offset.
local common = dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")
local requests = {}
local next_index = 1
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  local options = common.options(args)
  local headers = { ["Authorization"] = "Bearer " .. options.token }
  for id in io.lines(options.ids) do
    if #id > 0 then
      requests[#requests + 1] = wrk.format("GET", "/orders/" .. id .. "/", headers)
    end
  end
  assert(#requests > 0, "no order ids in " .. options.ids)
  next_index = ((thread_number or 1) * 7919) % #requests + 1
end

function request()
  local request = requests[next_index]
  next_index = next_index % #requests + 1
  return request
end

done = common.done
