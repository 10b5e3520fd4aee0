"""Logs, traces and Prometheus plumbing shared by every process, beside the data path."""
