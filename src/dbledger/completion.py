"""Shell completion scripts for bash and zsh, written from the command line's own parser, so a
new option completes without anyone editing a script.

zsh runs the bash function through ``bashcompinit``, the way zsh itself offers for bash scripts.
"""

from __future__ import annotations

import argparse

_BASH = """\
# dbledger completion for bash: source it, or put it in bash-completion's completions folder.
_dbledger() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="" command="" word i skip=""
    [ "$COMP_CWORD" -gt 0 ] && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [ -n "$skip" ]; then skip=""; continue; fi
        case " {valued} " in *" $word "*) skip=1; continue;; esac
        case " {commands} " in *" $word "*) command="$word"; break;; esac
    done
    case "$prev" in
{values}
    esac
    if [[ -n "$command" && "$cur" != -* && " {file_commands} " == *" $command "* ]]; then
        COMPREPLY=(); return  # a file name: complete -o default lists them
    fi
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

# Options whose value is a folder: completed with folder names.
_FOLDERS = frozenset({"PATH", "DIR"})


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._SubParsersAction)]


def _words(parser: argparse.ArgumentParser) -> list[str]:
    """The long options and the fixed choices of positional arguments (e.g. the shell)."""
    found: list[str] = []
    for action in _actions(parser):
        if action.option_strings:
            found += [option for option in action.option_strings if option.startswith("--")]
        elif action.choices:
            found += [str(choice) for choice in action.choices]
    return found


def _valued(parsers: list[argparse.ArgumentParser]) -> dict[str, argparse.Action]:
    """Every option that takes a value, by each of its spellings."""
    return {
        option: action
        for parser in parsers
        for action in _actions(parser)
        if action.option_strings and action.nargs != 0
        for option in action.option_strings
    }


def _value_case(option: str, action: argparse.Action) -> str:
    if action.choices:
        reply = f'COMPREPLY=($(compgen -W "{" ".join(map(str, action.choices))}" -- "$cur"))'
    elif action.metavar in _FOLDERS:
        reply = 'COMPREPLY=($(compgen -d -- "$cur"))'
    else:
        reply = "COMPREPLY=()"  # a value of the user's own (a URL, a number): files at most
    return f"        {option}) {reply}; return;;"


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for ``shell`` (``bash`` or ``zsh``)."""
    commands = _subcommands(parser)
    valued = _valued([parser, *commands.values()])
    file_commands = [
        name
        for name, sub in sorted(commands.items())
        if any(not a.option_strings and a.metavar == "FILE" for a in _actions(sub))
    ]
    bash = _BASH.format(
        commands=" ".join(sorted(commands)),
        top=" ".join(_words(parser)),
        valued=" ".join(sorted(valued)),
        values="\n".join(_value_case(option, action) for option, action in sorted(valued.items())),
        file_commands=" ".join(file_commands),
        cases="\n".join(
            f'        {name}) words="{" ".join(_words(sub))}";;' for name, sub in sorted(commands.items())
        ),
    )
    return bash if shell == "bash" else _ZSH.format(bash=bash)
