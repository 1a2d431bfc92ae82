"""The one place where the route is assembled. Nothing imports this module.

Loading it has no side effects: no network, no files. Resources read the environment (see
the README's table); with nothing set, everything points at the sandbox.
"""

from __future__ import annotations

import dagster as dg

from integration_project.assets import erp_delivered_orders, erp_orders, source_orders
from integration_project.resources import resources_from_env
from integration_project.schedules import (
    erp_delivery_job,
    erp_delivery_schedule,
    source_orders_job,
    source_orders_schedule,
)

defs = dg.Definitions(
    assets=[source_orders, erp_orders, erp_delivered_orders],
    jobs=[source_orders_job, erp_delivery_job],
    schedules=[source_orders_schedule, erp_delivery_schedule],
    resources=resources_from_env(),
)
