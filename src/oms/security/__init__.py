"""Password hashing and JWT keys/tokens."""
