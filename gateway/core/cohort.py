"""``target_cohort`` expressions: a small recursive-descent parser and matcher.

Grammar (keywords case-insensitive; ``NOT`` binds tighter than ``AND``, ``AND`` tighter than ``OR``)::

    expr   := or
    or     := and ("OR" and)*
    and    := unary ("AND" unary)*
    unary  := "NOT" unary | "(" expr ")" | term
    term   := KEY ":" VALUE
    KEY    := [A-Za-z_][A-Za-z0-9_.-]*
    VALUE  := bare | "quoted"     bare: [A-Za-z0-9_.\\-/*]+ ; quoted: any text, \\" and \\\\ escaped

A value ending in ``*`` matches by prefix (``hw:rev*``); a ``*`` elsewhere is literal. An empty
expression (or ``*``) means every device. A device attribute that is absent never matches a term
(so ``NOT line:3`` matches a device with no ``line``). Errors name the position (0-based).
Input length and nesting depth are bounded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_CHARS = 2048
MAX_DEPTH = 32

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_BARE = re.compile(r"[A-Za-z0-9_.\-/*]+")
_KEYWORDS = {"AND", "OR", "NOT"}


class CohortSyntaxError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position


class Expr:
    def matches(self, attrs: Mapping[str, str]) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Everyone(Expr):
    def matches(self, attrs: Mapping[str, str]) -> bool:
        return True

    def __str__(self) -> str:
        return "*"


def _show(value: str, *, prefix: bool) -> str:
    """A value as the parser reads it back: bare when that is unambiguous, else quoted."""
    bare = _BARE.fullmatch(value) is not None
    if prefix:
        return value + "*" if bare else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"*'
    if bare and not value.endswith("*"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Term(Expr):
    key: str
    value: str
    prefix: bool = False  # the value ended in '*': match by prefix

    def matches(self, attrs: Mapping[str, str]) -> bool:
        have = attrs.get(self.key)
        if have is None:
            return False
        return have.startswith(self.value) if self.prefix else have == self.value

    def __str__(self) -> str:
        return f"{self.key}:{_show(self.value, prefix=self.prefix)}"


@dataclass(frozen=True)
class Not(Expr):
    inner: Expr

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return not self.inner.matches(attrs)

    def __str__(self) -> str:
        return f"NOT {_wrap(self.inner, Not)}"


@dataclass(frozen=True)
class And(Expr):
    parts: tuple[Expr, ...]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return all(p.matches(attrs) for p in self.parts)

    def __str__(self) -> str:
        return " AND ".join(_wrap(p, And) for p in self.parts)


@dataclass(frozen=True)
class Or(Expr):
    parts: tuple[Expr, ...]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        return any(p.matches(attrs) for p in self.parts)

    def __str__(self) -> str:
        return " OR ".join(_wrap(p, Or) for p in self.parts)


def _wrap(e: Expr, parent: type) -> str:
    """Parenthesise where precedence needs it, so printing then parsing gives the same tree."""
    needs = isinstance(e, Or | And) and (
        parent is Not or (parent is And and isinstance(e, Or)) or type(e) is parent
    )
    return f"({e})" if needs else str(e)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def fail(self, message: str, pos: int | None = None) -> CohortSyntaxError:
        return CohortSyntaxError(message, self.pos if pos is None else pos)

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def keyword(self, word: str) -> bool:
        self.skip()
        end = self.pos + len(word)
        if self.text[self.pos : end].upper() == word and (
            end == len(self.text) or not (self.text[end].isalnum() or self.text[end] in "_.-:")
        ):
            self.pos = end
            return True
        return False

    def parse(self) -> Expr:
        self.skip()
        if self.pos == len(self.text) or self.text.strip() == "*":
            return Everyone()
        e = self.or_()
        self.skip()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos]!r}")
        return e

    def or_(self) -> Expr:
        parts = [self.and_()]
        while self.keyword("OR"):
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_(self) -> Expr:
        parts = [self.unary()]
        while self.keyword("AND"):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def unary(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH}")
        try:
            if self.keyword("NOT"):
                return Not(self.unary())
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == "(":
                start = self.pos
                self.pos += 1
                e = self.or_()
                self.skip()
                if self.pos >= len(self.text) or self.text[self.pos] != ")":
                    raise self.fail(f"'(' at position {start} is not closed")
                self.pos += 1
                return e
            return self.term()
        finally:
            self.depth -= 1

    def term(self) -> Term:
        self.skip()
        m = _KEY.match(self.text, self.pos)
        if m is None:
            what = repr(self.text[self.pos]) if self.pos < len(self.text) else "end of expression"
            raise self.fail(f"expected key:value, found {what}")
        key = m.group(0)
        if key.upper() in _KEYWORDS:
            raise self.fail(f"expected key:value, found keyword {key}")
        self.pos = m.end()
        if self.pos >= len(self.text) or self.text[self.pos] != ":":
            raise self.fail(f"expected ':' after {key!r}")
        self.pos += 1
        if self.pos < len(self.text) and self.text[self.pos] == '"':
            value = self.quoted()
            prefix = False
            if self.pos < len(self.text) and self.text[self.pos] == "*":
                self.pos += 1
                prefix = True
            return Term(key, value, prefix)
        m = _BARE.match(self.text, self.pos)
        if m is None:
            raise self.fail(f"expected a value after '{key}:'")
        self.pos = m.end()
        value = m.group(0)
        if value.endswith("*"):
            return Term(key, value[:-1], True)
        return Term(key, value)

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and self.pos + 1 < len(self.text) and self.text[self.pos + 1] in '"\\':
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif c == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(c)
                self.pos += 1
        raise self.fail(f"quote at position {start} is not closed", start)


def parse_cohort(text: str) -> Expr:
    if not isinstance(text, str):
        raise CohortSyntaxError("expected a string", 0)
    if len(text) > MAX_CHARS:
        raise CohortSyntaxError(f"longer than {MAX_CHARS} characters", MAX_CHARS)
    return _Parser(text).parse()
