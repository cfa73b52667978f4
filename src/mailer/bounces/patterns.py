"""Regular expressions compiled when first used, not when their module is imported.

The bounce reader and classifier hold 64 patterns, several of them long alternations of
phrases (:mod:`mailer.bounces.wordings`). Python compiles a pattern in pure Python:
compiling all of them took a tenth of ``mailer bounces classify``'s start-up, while one
bounce uses about a third of them (22 for a Postfix DSN). A :class:`Pattern` here is
written and used like ``re.compile(...)``'s; it compiles itself the first time it is
searched.

    CUT = patterns.compile(r"^-+ original message -+$", re.IGNORECASE | re.MULTILINE)
    CUT.search(text)        # compiled here, once
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import AnyStr, Generic


class Pattern(Generic[AnyStr]):
    """``re.compile(source, flags)``, compiled on first use. Its :attr:`pattern` (the
    source) can be read, and built into other patterns, without compiling it."""

    __slots__ = ("pattern", "flags", "_compiled")

    def __init__(self, pattern: AnyStr, flags: int = 0) -> None:
        self.pattern: AnyStr = pattern
        self.flags = flags
        self._compiled: re.Pattern[AnyStr] | None = None

    @property
    def compiled(self) -> re.Pattern[AnyStr]:
        if self._compiled is None:
            self._compiled = re.compile(self.pattern, self.flags)
        return self._compiled

    def search(self, string: AnyStr, pos: int = 0,
               endpos: int = 2**63 - 1) -> re.Match[AnyStr] | None:
        return self.compiled.search(string, pos, endpos)

    def match(self, string: AnyStr, pos: int = 0,
              endpos: int = 2**63 - 1) -> re.Match[AnyStr] | None:
        return self.compiled.match(string, pos, endpos)

    def fullmatch(self, string: AnyStr, pos: int = 0,
                  endpos: int = 2**63 - 1) -> re.Match[AnyStr] | None:
        return self.compiled.fullmatch(string, pos, endpos)

    def finditer(self, string: AnyStr, pos: int = 0,
                 endpos: int = 2**63 - 1) -> Iterator[re.Match[AnyStr]]:
        return self.compiled.finditer(string, pos, endpos)

    def findall(self, string: AnyStr, pos: int = 0, endpos: int = 2**63 - 1) -> list[AnyStr]:
        return self.compiled.findall(string, pos, endpos)

    def split(self, string: AnyStr, maxsplit: int = 0) -> list[AnyStr]:
        return self.compiled.split(string, maxsplit)

    def sub(self, repl: AnyStr | Callable[[re.Match[AnyStr]], AnyStr], string: AnyStr,
            count: int = 0) -> AnyStr:
        return self.compiled.sub(repl, string, count)

    def __repr__(self) -> str:
        return f"patterns.compile({self.pattern!r}, {self.flags!r})"


def compile(pattern: AnyStr, flags: int = 0) -> Pattern[AnyStr]:  # noqa: A001 - as re's
    """A pattern compiled on first use (see the module's docstring)."""
    return Pattern(pattern, flags)
