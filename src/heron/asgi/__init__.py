"""The ASGI bridge: scopes, receive/send semantics and lifespan, shared by every protocol."""
