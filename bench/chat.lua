-- wrk script: POST a small non-streaming chat completion (same body for every request).
-- BENCH_TOKEN and BENCH_MODEL override the defaults (run.py sets both).
local token = os.getenv("BENCH_TOKEN") or "sk-bench-0123456789abcdef"
local model = os.getenv("BENCH_MODEL") or "gpt-4o-mini"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"system","content":"You are a helpful assistant."},'
  .. '{"role":"user","content":"Say hello to the benchmark."}],"temperature":0.2,"max_tokens":64}'
