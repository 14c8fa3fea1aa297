-- One request per connection: the server closes after the response, wrk reconnects.
wrk.headers["Connection"] = "close"
