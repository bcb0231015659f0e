-- wrk script for the 100 % miss scenario: every request asks for a URL no
-- request has asked for before, /p/<prefix>-<n> with n = 1, 2, 3, ...
--
-- Usage: wrk -t1 ... --latency URL -- PREFIX
-- PREFIX must be unique per run and per target (edge.sh passes
-- miss-<target>-r<run>-<pid>), so no URL repeats within or across runs and
-- targets. With -t1 there is one Lua state, so the counter is unique too
-- (with several threads, each thread also appends its own id).

local prefix = "miss"
local counter = 0

function setup(thread)
  thread:set("thread_id", tostring(setup_threads or 0))
  setup_threads = (setup_threads or 0) + 1
end

function init(args)
  if args[1] ~= nil and args[1] ~= "" then
    prefix = args[1]
  end
  if thread_id ~= nil and thread_id ~= "0" then
    prefix = prefix .. "-t" .. thread_id
  end
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/p/" .. prefix .. "-" .. counter)
end
