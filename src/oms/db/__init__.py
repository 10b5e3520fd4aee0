"""Database models and session handling shared by every service."""
