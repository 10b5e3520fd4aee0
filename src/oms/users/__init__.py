"""Users: accounts and their repository."""
