"""``<route_id>__order_files_sensor``: a CSV route's pickup. It looks in the route's folder,
and for each file it has not seen (by content: renamed or touched again, a file is the same
file) adds a partition keyed by the file's SHA-256 and requests one run of the route's source
job for it (read, validate and stage the file, then map its orders). The run key is the
content hash too, so the same content never starts a second run from this sensor.

A file counts once it has not changed for the route's ``settle_s`` (one still being copied
in is left for a later tick); hidden files, temporary files of copy tools and editors, and
subfolders (``rejected/``) are never read. The cursor remembers each file's size, time and
hash, so a file is hashed again only when it changed.
"""

import json
import time
from typing import Any

import dagster as dg

from integration_project.assets import FILE_TAG, OrderFileConfig, RouteAssets
from integration_project.connectors.csv_files import CsvFolderError, FolderFile, ready_files
from integration_project.resources import CsvFolderResource
from integration_project.routes.config import CsvFolderSource
from integration_project.schedules import sensor_status

#: How often the daemon looks in a route's folder.
FILE_SENSOR_INTERVAL_S = 30
#: Most runs one evaluation requests (the rest wait for the next tick, oldest name first).
MAX_FILES_PER_TICK = 25


def build_file_sensor(assets: RouteAssets, source_job: Any) -> dg.SensorDefinition:
    route = assets.route
    source = route.source
    assert isinstance(source, CsvFolderSource) and isinstance(
        assets.partitions_def, dg.DynamicPartitionsDefinition
    )
    files = assets.partitions_def
    op_name = assets.source_orders.op.name
    status = sensor_status(route)

    @dg.sensor(
        name=f"{route.id}__order_files_sensor",
        job=source_job,
        minimum_interval_seconds=FILE_SENSOR_INTERVAL_S,
        default_status=status,
        required_resource_keys={route.shop_key},
        description=f"{route.name}: one run per new order file in the route's folder (by "
        f"content hash), once it has not changed for {source.settle_s:g} s.",
    )
    def order_files_sensor(
        context: dg.SensorEvaluationContext, **resources: Any
    ) -> dg.SensorResult:
        # The route's folder resource: on the context when the daemon evaluates the sensor,
        # passed in as well when the sensor is called directly (a test, the CLI's preview).
        folder: CsvFolderResource = resources.get(route.shop_key) or getattr(
            context.resources, route.shop_key
        )
        known = json.loads(context.cursor) if context.cursor else {}
        try:
            ready, cache = ready_files(
                folder.path(), settle_s=source.settle_s, now=time.time(), known=known
            )
        except CsvFolderError as exc:
            raise dg.Failure(description=f"{route.id}: {exc}") from None
        chosen = _new_files(ready, set(context.instance.get_dynamic_partitions(files.name)))
        cursor = json.dumps(cache, sort_keys=True)
        if not chosen:
            return dg.SensorResult(skip_reason=f"no new file ({len(ready)} read)", cursor=cursor)
        requests = [
            dg.RunRequest(
                run_key=digest,
                partition_key=digest,
                run_config=dg.RunConfig(ops={op_name: OrderFileConfig(file_name=name)}),
                tags={FILE_TAG: name},
            )
            for digest, name in chosen
        ]
        context.log.info("New order files: %s", ", ".join(name for _, name in chosen))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[files.build_add_request([d for d, _ in chosen])],
            cursor=cursor,
        )

    return order_files_sensor


def _new_files(ready: list[FolderFile], seen: set[str]) -> list[tuple[str, str]]:
    """(sha256, name) of the ready files whose content has no partition yet, each content
    once (the first name in order), at most :data:`MAX_FILES_PER_TICK`."""
    new: dict[str, str] = {}
    for file in ready:
        if file.sha256 not in seen and file.sha256 not in new:
            new[file.sha256] = file.name
    return list(new.items())[:MAX_FILES_PER_TICK]
