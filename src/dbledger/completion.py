"""Shell completion scripts for bash and zsh, written from the command line's own parser, so a
new option completes without anyone editing a script.

zsh runs the bash function through ``bashcompinit``, the way zsh itself offers for bash scripts.
"""

from __future__ import annotations

import argparse

_BASH = """\
# dbledger completion for bash: source it, or put it in bash-completion's completions folder.
_dbledger() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" command="" word
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case " {commands} " in *" $word "*) command="$word"; break;; esac
    done
    local words
    case "$command" in
{cases}
        *) words="{commands} {top}";;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _dbledger dbledger
"""

_ZSH = """\
#compdef dbledger
# dbledger completion for zsh: eval "$(dbledger completion zsh)" in ~/.zshrc.
autoload -U +X bashcompinit && bashcompinit
{bash}"""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _words(parser: argparse.ArgumentParser) -> list[str]:
    """The option strings and the fixed choices of positional arguments (e.g. the shell)."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            found += [option for option in action.option_strings if option.startswith("--")]
        elif action.choices:
            found += [str(choice) for choice in action.choices]
    return found


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for ``shell`` (``bash`` or ``zsh``)."""
    commands = _subcommands(parser)
    cases = "\n".join(
        f'        {name}) words="{" ".join(_words(sub))}";;' for name, sub in sorted(commands.items())
    )
    bash = _BASH.format(commands=" ".join(sorted(commands)), top=" ".join(_words(parser)), cases=cases)
    return bash if shell == "bash" else _ZSH.format(bash=bash)
