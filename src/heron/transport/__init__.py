"""asyncio transports: move bytes between sockets and the sans-IO cores, with flow control and deadlines."""
