-- wrk script: POST one 1-input, 8-dimension embeddings request (the body of
-- the P1 benchmark, docs/benchmarks.md "Targets") on every request of every
-- connection.
wrk.method = "POST"
wrk.body = '{"model":"m","input":"hello world","dimensions":8}'
wrk.headers["Content-Type"] = "application/json"
