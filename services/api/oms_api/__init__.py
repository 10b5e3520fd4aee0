"""oms_api."""
