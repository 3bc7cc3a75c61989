"""The container job (batch processing): a command in an image of the caller's choice.

The image must be allowed by ALLOWED_IMAGES (checked through ``image_override``, like any
request's image); the Job may run several pods at once (``parallelism``), need several
successful ones (``completions``), give each its index (``completion_mode`` Indexed:
``JOB_COMPLETION_INDEX``) and map exit codes to ``podFailurePolicy`` rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from jobscheduler.core.errors import FieldViolation, InvalidArgument, brief
from jobscheduler.core.manifests import RenderContext, job_manifest
from jobscheduler.core.naming import (
    control_character_problem,
    image_reference_problem,
    secret_name_problem,
)
from jobscheduler.core.quantity import RESOURCE_KEYS, fill_resources, resource_problems
from jobscheduler.core.registry import JobHandler
from jobscheduler.core.validation import env_name_refusal, env_violations

MAX_ARGS: Final = 256
MAX_ARG_LENGTH: Final = 4096
#: command plus args, in bytes (UTF-8).
MAX_ARGV_BYTES: Final = 64 * 1024
MAX_SECRET_ENV: Final = 32
MAX_COMPLETIONS: Final = 100
MAX_PARALLELISM: Final = 100
MAX_BACKOFF_LIMIT_PER_INDEX: Final = 10
#: podFailurePolicy takes at most 20 rules; one is the DisruptionTarget rule job_manifest adds.
MAX_EXIT_CODE_RULES: Final = 19
MAX_EXIT_CODES_PER_RULE: Final = 255
#: Set by the Job controller (and the local backend) for Indexed jobs; no request may set it.
RESERVED_ENV: Final = frozenset({"JOB_COMPLETION_INDEX"})
INDEXED_ENV_REASON: Final = "is set for Indexed jobs by the Job controller and cannot be overridden"
COMPLETION_MODES: Final = {0: "NonIndexed", 1: "NonIndexed", 2: "Indexed"}
_MODE_NAMES: Final = {
    "COMPLETION_MODE_UNSPECIFIED": 0,
    "COMPLETION_MODE_NON_INDEXED": 1,
    "COMPLETION_MODE_INDEXED": 2,
}
EXIT_CODE_ACTIONS: Final = {1: "FailJob", 2: "Ignore", 3: "FailIndex"}
_ACTION_NAMES: Final = {
    "EXIT_CODE_ACTION_FAIL_JOB": 1,
    "EXIT_CODE_ACTION_IGNORE": 2,
    "EXIT_CODE_ACTION_FAIL_INDEX": 3,
}
_SECRET_KEY_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


@dataclass(frozen=True, slots=True)
class ContainerParams:
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    #: Variable -> (Secret name, key).
    env_from_secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    resources: Mapping[str, str] = field(default_factory=dict)
    parallelism: int = 1
    completions: int = 1
    completion_mode: str = "NonIndexed"
    backoff_limit_per_index: int | None = None
    exit_code_rules: tuple[tuple[str, tuple[int, ...]], ...] = ()


class ContainerHandler(JobHandler[ContainerParams]):
    job_type = "container"
    request_field = "container_job"
    description = (
        "Batch processing: runs a command in a container image allowed by ALLOWED_IMAGES, with"
        " parallelism, completions (Indexed: JOB_COMPLETION_INDEX) and exit-code rules."
    )

    def __init__(self, *, max_cpu_limit: str = "4", max_memory_limit: str = "8Gi") -> None:
        self.maxima = {"cpu": max_cpu_limit, "memory": max_memory_limit}

    def image_override(self, params: ContainerParams) -> tuple[str, str] | None:
        return (f"{self.request_field}.image", params.image)

    def parameters_schema(self) -> dict[str, Any]:
        strings = {"type": "array", "items": {"type": "string"}, "maxItems": MAX_ARGS}
        ref = {"type": "object", "properties": {"name": {"type": "string"}, "key": {"type": "string"}}}
        return {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "maxLength": 512},
                "command": strings,
                "args": strings,
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "env_from_secrets": {"type": "object", "additionalProperties": ref},
                "resources": {
                    "type": "object",
                    "properties": {key: {"type": "string"} for key in RESOURCE_KEYS},
                },
                "parallelism": {"type": "integer", "minimum": 0, "maximum": MAX_PARALLELISM},
                "completions": {"type": "integer", "minimum": 0, "maximum": MAX_COMPLETIONS},
                "completion_mode": {"enum": list(_MODE_NAMES)},
                "backoff_limit_per_index": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_BACKOFF_LIMIT_PER_INDEX,
                },
                "exit_code_rules": {
                    "type": "array",
                    "maxItems": MAX_EXIT_CODE_RULES,
                    "items": {
                        "type": "object",
                        "properties": {
                            "action": {"enum": list(_ACTION_NAMES)},
                            "exit_codes": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                        },
                    },
                },
            },
        }

    def parse(self, params: Mapping[str, Any]) -> ContainerParams:
        f = self.request_field
        violations: list[FieldViolation] = []

        def bad(name: str, description: str) -> None:
            violations.append(FieldViolation(f"{f}.{name}", description))

        image = params.get("image")
        if not isinstance(image, str) or not image:
            bad("image", "must name a container image (allowed by ALLOWED_IMAGES)")
            image = ""
        elif (problem := image_reference_problem(image)) is not None:
            bad("image", problem)
        argv: dict[str, tuple[str, ...]] = {}
        for name in ("command", "args"):
            argv[name] = _strings(params.get(name), f"{f}.{name}", violations)
        total = sum(len(a.encode(errors="surrogatepass")) for a in (*argv["command"], *argv["args"]))
        if total > MAX_ARGV_BYTES:
            bad("args", f"command and args together must be at most {MAX_ARGV_BYTES} bytes (got {total})")
        env = _mapping(params.get("env"), f"{f}.env", violations)
        violations.extend(env_violations(f"{f}.env", env, RESERVED_ENV, INDEXED_ENV_REASON))
        secrets = _mapping(params.get("env_from_secrets"), f"{f}.env_from_secrets", violations)
        secret_env = _secret_env(f"{f}.env_from_secrets", secrets, env, violations)
        raw_resources = _mapping(params.get("resources"), f"{f}.resources", violations)
        resources = {str(k): v for k, v in raw_resources.items() if v not in ("", None)}
        if any(not isinstance(v, str) for v in resources.values()):
            bad("resources", "values must be strings (Kubernetes quantities such as 500m or 1Gi)")
        else:
            for key, problem in resource_problems(resources, self.maxima).items():
                bad(f"resources.{key}", problem)
        parallelism = _count(params.get("parallelism"), f"{f}.parallelism", MAX_PARALLELISM, violations)
        completions = _count(params.get("completions"), f"{f}.completions", MAX_COMPLETIONS, violations)
        mode = _enum(params.get("completion_mode"), _MODE_NAMES, f"{f}.completion_mode", violations)
        mode_name = COMPLETION_MODES.get(mode, "NonIndexed")
        per_index = _count(
            params.get("backoff_limit_per_index"),
            f"{f}.backoff_limit_per_index",
            MAX_BACKOFF_LIMIT_PER_INDEX,
            violations,
        )
        if per_index and mode_name != "Indexed":
            bad("backoff_limit_per_index", "needs completion_mode COMPLETION_MODE_INDEXED")
        rules = _exit_code_rules(params.get("exit_code_rules"), f"{f}.exit_code_rules", violations)
        if any(action == "FailIndex" for action, _ in rules) and not per_index:
            bad("exit_code_rules", "FAIL_INDEX needs backoff_limit_per_index (an Indexed job)")
        if violations:
            raise InvalidArgument(violations)
        return ContainerParams(
            image=image,
            command=argv["command"],
            args=argv["args"],
            env={str(k): str(v) for k, v in env.items()},
            env_from_secrets=secret_env,
            resources=resources,
            parallelism=parallelism or 1,
            completions=completions or 1,
            completion_mode=mode_name,
            backoff_limit_per_index=per_index or None,
            exit_code_rules=rules,
        )

    def render(self, params: ContainerParams, ctx: RenderContext) -> dict[str, Any]:
        d = ctx.defaults
        defaults = {
            "cpu_request": d.cpu_request,
            "memory_request": d.memory_request,
            "cpu_limit": d.cpu_limit,
            "memory_limit": d.memory_limit,
        }
        indexed = params.completion_mode == "Indexed"
        return job_manifest(
            ctx,
            image=params.image,
            command=params.command,
            args=params.args,
            env=params.env,
            secret_env=params.env_from_secrets,
            resources=fill_resources(params.resources, defaults),
            parallelism=params.parallelism,
            completions=params.completions,
            completion_mode=params.completion_mode if indexed else None,
            backoff_limit_per_index=params.backoff_limit_per_index,
            exit_code_rules=params.exit_code_rules,
        )


def _strings(value: Any, where: str, violations: list[FieldViolation]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        violations.append(FieldViolation(where, "must be a list of strings"))
        return ()
    if len(value) > MAX_ARGS:
        violations.append(FieldViolation(where, f"at most {MAX_ARGS} items (got {len(value)})"))
        return ()
    for i, item in enumerate(value):
        if not isinstance(item, str):
            violations.append(FieldViolation(f"{where}[{i}]", "must be a string"))
        elif len(item) > MAX_ARG_LENGTH:
            violations.append(FieldViolation(f"{where}[{i}]", f"must be at most {MAX_ARG_LENGTH} characters"))
        elif (problem := control_character_problem(item, multiline=True)) is not None:
            violations.append(FieldViolation(f"{where}[{i}]", problem))
    return tuple(str(v) for v in value)


def _mapping(value: Any, where: str, violations: list[FieldViolation]) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        violations.append(FieldViolation(where, "must be a map"))
        return {}
    return value


def _count(value: Any, where: str, most: int, violations: list[FieldViolation]) -> int:
    """A non-negative integer up to ``most``; 0 or absent: unset."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        violations.append(FieldViolation(where, "must be an integer"))
        return 0
    if not 0 <= value <= most:
        violations.append(FieldViolation(where, f"must be between 0 and {most} (got {value})"))
        return 0
    return value


def _enum(value: Any, names: Mapping[str, int], where: str, violations: list[FieldViolation]) -> int:
    """An enum value as the proto number (the plain data has numbers; stored JSON may have names)."""
    if value is None:
        return 0
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in names.values():
        return value
    violations.append(FieldViolation(where, f"must be one of {', '.join(names)} (got {brief(str(value))})"))
    return 0


def _secret_env(
    where: str, refs: Mapping[Any, Any], env: Mapping[Any, Any], violations: list[FieldViolation]
) -> dict[str, tuple[str, str]]:
    if len(refs) > MAX_SECRET_ENV:
        violations.append(FieldViolation(where, f"at most {MAX_SECRET_ENV} variables (got {len(refs)})"))
        return {}
    out: dict[str, tuple[str, str]] = {}
    for name, ref in refs.items():
        path = f"{where}[{name}]"
        problem = (
            env_name_refusal(name, RESERVED_ENV, INDEXED_ENV_REASON)
            if isinstance(name, str)
            else "must be a variable name"
        )
        if problem is not None:
            violations.append(FieldViolation(path, problem))
            continue
        if name in env:
            violations.append(FieldViolation(path, "is also set in env; set it in one place"))
            continue
        ref = ref if isinstance(ref, Mapping) else {}
        secret, key = ref.get("name"), ref.get("key")
        if not isinstance(secret, str) or (problem := secret_name_problem(secret)) is not None:
            violations.append(FieldViolation(f"{path}.name", problem or "must be a Secret's name"))
        elif not isinstance(key, str) or not key or len(key) > 253 or not set(key) <= _SECRET_KEY_CHARS:
            violations.append(
                FieldViolation(
                    f"{path}.key", f"must be a Secret key ([-._a-zA-Z0-9]+; got {brief(str(key))})"
                )
            )
        elif key in (".", ".."):
            violations.append(FieldViolation(f"{path}.key", "must not be . or .."))
        else:
            out[name] = (secret, key)
    return out


def _exit_code_rules(
    value: Any, where: str, violations: list[FieldViolation]
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        violations.append(FieldViolation(where, "must be a list of rules"))
        return ()
    if len(value) > MAX_EXIT_CODE_RULES:
        violations.append(FieldViolation(where, f"at most {MAX_EXIT_CODE_RULES} rules (got {len(value)})"))
        return ()
    rules: list[tuple[str, tuple[int, ...]]] = []
    for i, rule in enumerate(value):
        path = f"{where}[{i}]"
        rule = rule if isinstance(rule, Mapping) else {}
        action = _enum(rule.get("action"), _ACTION_NAMES, f"{path}.action", violations)
        codes = rule.get("exit_codes")
        if action == 0:
            violations.append(FieldViolation(f"{path}.action", "must be FAIL_JOB, IGNORE or FAIL_INDEX"))
            continue
        if not isinstance(codes, Sequence) or isinstance(codes, str | bytes) or not codes:
            violations.append(FieldViolation(f"{path}.exit_codes", "must list at least one exit code"))
            continue
        if len(codes) > MAX_EXIT_CODES_PER_RULE or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 255 for c in codes
        ):
            violations.append(
                FieldViolation(
                    f"{path}.exit_codes", f"must be at most {MAX_EXIT_CODES_PER_RULE} codes, each 1-255"
                )
            )
            continue
        rules.append((EXIT_CODE_ACTIONS[action], tuple(sorted(set(codes)))))
    return tuple(rules)
