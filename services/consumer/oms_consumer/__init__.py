"""oms_consumer."""
