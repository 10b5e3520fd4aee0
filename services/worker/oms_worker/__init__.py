"""oms_worker."""
