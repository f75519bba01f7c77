"""ApiVersions: what this broker implements, exactly."""

from __future__ import annotations

from strom.broker.handlers.base import Body, Context, api
from strom.broker.handlers.dispatch import supported_api_versions


# v4 only lets a supported feature's minimum version be 0 (KAFKA-17011); strom lists no features.
@api(18, "ApiVersions", 0, 4)
async def api_versions(ctx: Context, req: Body) -> Body:
    return {"error_code": 0, "api_keys": supported_api_versions(), "throttle_time_ms": 0}
