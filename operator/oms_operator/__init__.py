"""oms_operator: the Kopf operator for the OrderSystem resource."""
