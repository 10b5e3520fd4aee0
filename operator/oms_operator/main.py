"""`oms-operator`: the one command that runs the operator.

Equivalent to `kopf run --standalone [--all-namespaces | -n NS ...] --liveness=URL
-m oms_operator.handlers`, with JSON logs. One replica by design (`--standalone`): scaling and key
rotation must have a single writer; the Deployment uses `strategy: Recreate`.
"""

from __future__ import annotations

import kopf

import oms_operator.handlers  # noqa: F401  (importing registers the Kopf handlers)
from oms.observability.logs import configure_logging
from oms_operator.config import OperatorConfig


def main() -> None:
    config = OperatorConfig()
    configure_logging("operator", config.LOG_LEVEL)
    kopf.run(
        standalone=True,
        clusterwide=not config.NAMESPACES,
        namespaces=config.NAMESPACES,
        liveness_endpoint=config.liveness_endpoint,
    )


if __name__ == "__main__":
    main()
