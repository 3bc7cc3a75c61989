"""The weather job's program (``python -I -m weather_plugin.run``): GET ``WEATHER_URL``, POST the
reading to ``CONTROL_PLANE_ENDPOINT`` as JSON ``{job_id, city, reading, fetched_at}``.

Exit codes: 0 reported, 1 the reading could not be fetched or reported (after retries),
2 configuration error (a variable missing or invalid).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Final


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an instruction: following it could reach what the URL
    checks refused (instance metadata, say)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirect())
#: At most this much of the reading is read and reported.
MAX_READING_BYTES: Final = 16 * 1024
ATTEMPTS: Final = 3


def _config() -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name in ("WEATHER_CITY", "WEATHER_URL", "CONTROL_PLANE_ENDPOINT"):
        config[name] = os.environ.get(name, "")
        if not config[name]:
            raise ValueError(f"{name} is not set")
    config["JOB_ID"] = os.environ.get("JOB_ID", "")
    config["timeout"] = float(os.environ.get("WEATHER_TIMEOUT_SECONDS", "10"))
    return config


def _retrying(what: str, call: Any) -> Any:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except (OSError, urllib.error.URLError) as exc:
            print(f"{what} failed (attempt {attempt} of {ATTEMPTS}): {exc}", file=sys.stderr, flush=True)
            if attempt == ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def fetch(url: str, timeout: float) -> Any:
    with _OPENER.open(url, timeout=timeout) as response:
        body = response.read(MAX_READING_BYTES)
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def report(endpoint: str, payload: dict[str, Any], timeout: float) -> int:
    data = json.dumps(payload).encode()
    request = urllib.request.Request(
        endpoint, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with _OPENER.open(request, timeout=timeout) as response:
        return int(response.status)


def main() -> int:
    try:
        config = _config()
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    timeout = config["timeout"]
    try:
        reading = _retrying("fetch", lambda: fetch(config["WEATHER_URL"], timeout))
        print(f"reading for {config['WEATHER_CITY']}: {json.dumps(reading)[:200]}", flush=True)
        payload = {
            "job_id": config["JOB_ID"],
            "city": config["WEATHER_CITY"],
            "reading": reading,
            "fetched_at": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        status = _retrying("report", lambda: report(config["CONTROL_PLANE_ENDPOINT"], payload, timeout))
    except (OSError, urllib.error.URLError) as exc:
        print(f"giving up: {exc}", file=sys.stderr)
        return 1
    print(f"reported (HTTP {status})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
