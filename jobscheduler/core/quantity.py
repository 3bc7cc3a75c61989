"""Kubernetes resource quantities (``500m``, ``2``, ``64Mi``): parsing and per-job bounds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Final

_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|E|Ei|P|Pi)?")
_QUANTITY_MAX_CHARS: Final = 64
#: Multipliers of the Kubernetes quantity suffixes (decimal SI and binary IEC).
_SUFFIXES: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}
#: The resource keys a job may set (job_manifest's ``resources``), by the resource they bound.
RESOURCE_KEYS: Final = {
    "cpu_request": "cpu",
    "cpu_limit": "cpu",
    "memory_request": "memory",
    "memory_limit": "memory",
}


def parse_quantity(value: str) -> Decimal:
    """The amount in a Kubernetes quantity: ``"500m"`` -> 0.5, ``"64Mi"`` -> 67108864, ``"2"`` -> 2.

    Plain decimals with an SI (m, k, M, G, T, P, E) or binary (Ki, Mi, Gi, Ti, Pi, Ei) suffix;
    ValueError for anything else (exponents, signs, and more than 64 characters included).
    """
    m = _QUANTITY.fullmatch(value) if len(value) <= _QUANTITY_MAX_CHARS else None
    if m is None:
        raise ValueError(f"must be a Kubernetes quantity such as 100m or 64Mi (got {value[:64]!r})")
    number, suffix = m.groups()
    return Decimal(number) * _SUFFIXES[suffix or ""]


def resource_problems(
    resources: Mapping[str, str], defaults: Mapping[str, str], maxima: Mapping[str, str]
) -> dict[str, str]:
    """What is wrong with a job's ``resources`` (key -> problem; empty: nothing).

    Each given value must be a quantity above zero and at most ``maxima[cpu|memory]``; each
    request, with the defaults filling in what is not given, at most its limit.
    """
    problems: dict[str, str] = {}
    amounts: dict[str, Decimal] = {}
    for key, value in resources.items():
        if key not in RESOURCE_KEYS:
            problems[key] = f"is not a resource ({', '.join(RESOURCE_KEYS)})"
            continue
        try:
            amount = parse_quantity(value)
        except ValueError as exc:
            problems[key] = str(exc)
            continue
        limit = maxima[RESOURCE_KEYS[key]]
        if amount <= 0:
            problems[key] = f"must be above zero (got {value})"
        elif amount > parse_quantity(limit):
            problems[key] = f"must be at most {limit} (the configured maximum; got {value})"
        else:
            amounts[key] = amount
    for kind in ("cpu", "memory"):
        request, limit = f"{kind}_request", f"{kind}_limit"
        if request not in amounts and limit not in amounts:
            continue
        req = amounts.get(request) if request in resources else parse_quantity(defaults[request])
        lim = amounts.get(limit) if limit in resources else parse_quantity(defaults[limit])
        if req is not None and lim is not None and req > lim:
            problems[request] = f"must not be above {limit} ({resources.get(request, defaults[request])} >"
            problems[request] += f" {resources.get(limit, defaults[limit])})"
    return problems
