-- POST /orders/ with a bearer token and the same small order body each time: the create path
-- (order row + outbox row in one transaction). To create a bounded number of orders the
-- harness watches the database and interrupts wrk (SIGINT: wrk still reports).
local common = dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")
local request_text

function init(args)
  local options = common.options(args)
  local headers = {
    ["Authorization"] = "Bearer " .. options.token,
    ["Content-Type"] = "application/json",
  }
  local body = '{"items":[{"name":"book","quantity":2},{"name":"pen","quantity":1}],' ..
    '"total_price":"21.40"}'
  request_text = wrk.format("POST", "/orders/", headers, body)
end

function request()
  return request_text
end

done = common.done
