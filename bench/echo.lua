-- POST a 4 KiB body on every request (wrk adds Content-Length).
wrk.method = "POST"
wrk.body = string.rep("e", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
