"""The engine in a worker process, reached over ZeroMQ with an explicit wire format."""
