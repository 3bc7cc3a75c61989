"""``jobscheduler completion bash|zsh``: a completion script generated from the argparse parser,
so it always knows every command, flag and fixed value."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterable, Mapping

from jobscheduler.client import JOB_TYPES
from jobscheduler.commands._parser import PHASES, PRIORITIES
from jobscheduler.commands._parser_schedules import POLICIES

#: Values of flags that the commands check themselves (argparse has no ``choices`` for them).
_VALUES: Mapping[str, Iterable[str]] = {
    "--phase": PHASES,
    "--priority": PRIORITIES,
    "--concurrency-policy": POLICIES,
}
_FILES = ("--ca-file", "--cert-file", "--key-file", "--token-file")
#: Positional arguments with fixed values, by their dest.
_POSITIONALS: Mapping[str, Iterable[str]] = {"job_type": sorted(JOB_TYPES), "shell": ("bash", "zsh")}


def _words(items: Iterable[str]) -> str:
    return shlex.quote(" ".join(items))


def _body(parser: argparse.ArgumentParser, indent: str) -> list[str]:
    """The completion of one (sub)command's flags, flag values and positional values."""
    flags: list[str] = []
    value_cases: list[str] = []
    file_flags: list[str] = []
    positional: list[str] = []
    for action in parser._actions:
        if not action.option_strings:
            positional.extend(action.choices or _POSITIONALS.get(action.dest, ()))
            continue
        flags.extend(action.option_strings)
        if action.nargs == 0:
            continue
        choices = action.choices or next((_VALUES[o] for o in action.option_strings if o in _VALUES), None)
        if choices:
            pattern = "|".join(action.option_strings)
            value_cases.append(
                f'{indent}  {pattern}) COMPREPLY=($(compgen -W {_words(choices)} -- "$cur")); return;;'
            )
        elif any(o in _FILES for o in action.option_strings):
            file_flags.extend(action.option_strings)
    if file_flags:
        value_cases.append(f'{indent}  {"|".join(file_flags)}) COMPREPLY=($(compgen -f -- "$cur")); return;;')
    return [
        f'{indent}case "$prev" in',
        *value_cases,
        f"{indent}esac",
        f'{indent}if [[ "$cur" == -* || -z {_words(positional)} ]]; then'
        f' COMPREPLY=($(compgen -W {_words(flags)} -- "$cur"));'
        f' else COMPREPLY=($(compgen -W {_words(positional)} -- "$cur")); fi',
    ]


def _command_case(name: str, parser: argparse.ArgumentParser) -> str:
    nested = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if nested is None:
        return "\n".join([f"    {name})", *_body(parser, "      "), "      ;;"])
    # A command with actions (schedules create ...): the first word after it picks the action.
    actions: Mapping[str, argparse.ArgumentParser] = nested.choices
    lines = [
        f"    {name})",
        '      local action="" j',
        "      for ((j = i + 1; j < COMP_CWORD; j++)); do",
        '        case "${COMP_WORDS[j]}" in -*) ;; *) action="${COMP_WORDS[j]}"; break;; esac',
        "      done",
        '      case "$action" in',
    ]
    for action, sub in actions.items():
        lines += [f"        {action})", *_body(sub, "          "), "          ;;"]
    lines += [
        f'        *) COMPREPLY=($(compgen -W {_words([*actions, "--help"])} -- "$cur"));;',
        "      esac;;",
    ]
    return "\n".join(lines)


def bash_script(parser: argparse.ArgumentParser) -> str:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands: Mapping[str, argparse.ArgumentParser] = sub.choices
    cases = "\n".join(_command_case(name, p) for name, p in commands.items())
    prog = parser.prog
    return f"""# {prog} completion for bash (and zsh through bashcompinit)
_{prog}_complete() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" cmd="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "${{COMP_WORDS[i]}}" in -*) ;; *) cmd="${{COMP_WORDS[i]}}"; break;; esac
  done
  if [[ -z "$cmd" ]]; then
    COMPREPLY=($(compgen -W {_words([*commands, "--help"])} -- "$cur")); return
  fi
  case "$cmd" in
{cases}
  esac
}}
complete -o default -F _{prog}_complete {prog}
"""


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser)
    return bash_script(parser)
