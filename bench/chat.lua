-- chat.lua: wrk script: POST /api/v1/chat turns spread over SESSIONS sessions
-- (a new session id per wrk thread and counter), or, with STATELESS=1, OpenAI-
-- compatible completions that touch no store (the same offline answer).
local sessions = tonumber(os.getenv("SESSIONS") or "200")
local stateless = os.getenv("STATELESS") == "1"
local counter, tid = 0, 0

function setup(thread)
  tid = tid + 1
  thread:set("tid", tid)
end

function request()
  counter = counter + 1
  local sid = string.format("bench-%d-%d", tid or 0, counter % sessions)
  if stateless then
    return wrk.format("POST", "/v1/chat/completions", {["Content-Type"] = "application/json"},
      '{"model":"offline","messages":[{"role":"user","content":"hello bench"}]}')
  end
  return wrk.format("POST", "/api/v1/chat", {["Content-Type"] = "application/json"},
    '{"message":"hello bench","session_id":"' .. sid .. '"}')
end

function done(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
