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


def resource_problems(resources: Mapping[str, str], maxima: Mapping[str, str]) -> dict[str, str]:
    """What is wrong with a job's ``resources`` (key -> problem; empty: nothing).

    Each given value must be a quantity above zero and at most ``maxima[cpu|memory]``; a given
    request at most the given limit of the same resource.
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
        asked, bound = amounts.get(f"{kind}_request"), amounts.get(f"{kind}_limit")
        if asked is not None and bound is not None and asked > bound:
            given = f"{resources[f'{kind}_request']} > {resources[f'{kind}_limit']}"
            problems[f"{kind}_request"] = f"must not be above {kind}_limit ({given})"
    return problems


def fill_resources(given: Mapping[str, str], defaults: Mapping[str, str]) -> dict[str, str]:
    """The four resources of a job's container: the given ones, the rest from ``defaults``, kept
    consistent (a default request above a given limit is lowered to it; a default limit below a
    given request is raised to it), as the API server refuses a request above its limit."""
    out = {key: given.get(key) or defaults[key] for key in RESOURCE_KEYS}
    for kind in ("cpu", "memory"):
        request, limit = f"{kind}_request", f"{kind}_limit"
        if parse_quantity(out[request]) > parse_quantity(out[limit]):
            if given.get(limit):
                out[request] = out[limit]
            else:
                out[limit] = out[request]
    return out
