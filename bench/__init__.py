"""`make bench`: throughput and latency of the API and the pipeline against same-run baselines."""
