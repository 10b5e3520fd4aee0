"""HTTP routers: thin adapters from HTTP to the domain services."""
