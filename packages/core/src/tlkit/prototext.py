"""Protocol-buffer text format (TLT/TAO's `.txt`/`.cfg` experiment specs), read without the `.proto` schemas.

protobuf's own `text_format` needs the message classes (TLT's compiled `*_pb2` modules) to parse anything,
so this is a small hand-written tokenizer and recursive-descent parser of the text-format grammar::

    model_config {                 # a nested message, with or without ':' before '{' (or '<' ... '>')
      arch: "resnet",              # key: value, ',' or ';' may end a field
      freeze_blocks: 0             # a field given twice is a repeated field (a list)
      freeze_blocks: 1
      input_image_size: '3,224,224'
    }
    target_class_mapping { key: "car" value: "car" }   # a proto map entry
    img_dir_names: ["val2017", "train2017"]            # the list form of a repeated field
    average_precision_mode: INTEGRATE                  # enum values and booleans are bare identifiers

Values: strings (single or double quotes, C escapes, adjacent strings joined), integers (decimal, hex, octal),
floats (`1e-3`, `.5`, `2.f`, `inf`, `nan`), booleans (`true`/`True`/`false`/`False`) and identifiers
(enum values, kept as strings). Every field keeps its line, so errors point at `file:line` and the key path.

Which fields are repeated cannot be known without the schema: `Message.to_tree` asks a callback (the task's
alias table) so that a repeated field given once still becomes a list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tlkit.errors import SpecError

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<nl>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![\w.]))
  | (?P<ident>[-+]?[A-Za-z_][\w.]*)
  | (?P<punct>[{}\[\]<>:,;])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "?": "?"}  # fmt: skip
_TRUE, _FALSE = {"true", "True"}, {"false", "False"}
_SPECIAL_FLOATS = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}


@dataclass
class Token:
    kind: str  # string, number, ident, punct, eof
    text: str
    line: int


@dataclass
class Field:
    name: str
    value: Any  # a scalar, a Message, or a list of them (the `[a, b]` form)
    line: int


@dataclass
class Message:
    fields: list[Field] = field(default_factory=list)
    line: int = 1

    def to_tree(
        self, repeated: Callable[[tuple[str, ...]], bool] | None, where: str = "<spec>"
    ) -> tuple[dict, dict[tuple, int]]:
        """Nested dicts/lists of plain values, and {key path: line}. List items get their index in the path.

        A field that `repeated(path)` names (path without list indices) or that is written in the `[a, b]`
        form becomes a list; any other field given twice is an error, as protobuf makes it. With no
        `repeated` (no schema knowledge at all) a field given twice becomes a list.
        """
        lines: dict[tuple, int] = {}
        return _tree(self, (), (), repeated, lines, where), lines


def _tree(msg: Message, path: tuple, pattern: tuple[str, ...], repeated, lines: dict, where: str) -> dict:
    out: dict[str, Any] = {}
    for f in msg.fields:
        p, pat = path + (f.name,), pattern + (f.name,)
        listed = f.name in out and isinstance(out[f.name], list)
        if isinstance(f.value, list) or (repeated(pat) if repeated else listed):
            if f.name not in out:
                out[f.name], lines[p] = [], f.line
            for v in f.value if isinstance(f.value, list) else [f.value]:
                i = len(out[f.name])
                lines[p + (i,)] = f.line
                out[f.name].append(_tree(v, p + (i,), pat, repeated, lines, where) if isinstance(v, Message) else v)
            continue
        if f.name in out and repeated is None:  # no schema: the second occurrence makes it a list
            for key in [k for k in lines if k[: len(p)] == p and len(k) > len(p)]:  # the first one becomes item 0
                lines[p + (0,) + key[len(p) :]] = lines.pop(key)
            lines[p + (0,)], lines[p + (1,)] = lines[p], f.line
            out[f.name] = [
                out[f.name],
                _tree(f.value, p + (1,), pat, None, lines, where) if isinstance(f.value, Message) else f.value,
            ]
            continue
        if f.name in out:
            raise SpecError(
                f"{where}:{f.line}: {'.'.join(pat)}: given twice (first at line {lines[p]}); "
                f"only a repeated field may appear more than once"
            )
        lines[p] = f.line
        out[f.name] = _tree(f.value, p, pat, repeated, lines, where) if isinstance(f.value, Message) else f.value
    return out


def tokenize(text: str, where: str = "<spec>") -> list[Token]:
    tokens, line, pos = [], 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SpecError(f"{where}:{line}: unexpected character {text[pos]!r} in the protobuf text")
        kind = m.lastgroup
        assert kind is not None  # every alternative of _TOKEN is a named group
        if kind == "nl":
            line += 1
        elif kind not in ("ws", "comment"):
            tokens.append(Token(kind, m.group(), line))
        pos = m.end()
    tokens.append(Token("eof", "", line))
    return tokens


def parse(text: str, where: str = "<spec>") -> Message:
    """Parse protobuf text into a `Message` (raises SpecError with file:line on bad syntax)."""
    return _Parser(tokenize(text, where), where).top()


class _Parser:
    def __init__(self, tokens: list[Token], where: str):
        self.toks, self.i, self.where = tokens, 0, where

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def error(self, msg: str, tok: Token | None = None) -> SpecError:
        tok = tok or self.tok
        got = "the end of the file" if tok.kind == "eof" else repr(tok.text)
        return SpecError(f"{self.where}:{tok.line}: {msg}, got {got}")

    def take(self, text: str) -> bool:
        if self.tok.kind == "punct" and self.tok.text == text:
            self.i += 1
            return True
        return False

    def top(self) -> Message:
        msg = self.fields(None)
        if self.tok.kind != "eof":
            raise self.error("expected a field name")
        return msg

    def fields(self, close: Token | None) -> Message:
        """Fields up to the closing '}' / '>' of `close` (None: the end of the file)."""
        end = {"{": "}", "<": ">"}.get(close.text) if close else None
        msg = Message(line=close.line if close else 1)
        while True:
            tok = self.tok
            if end and tok.kind == "punct" and tok.text == end:
                self.i += 1
                return msg
            if tok.kind == "eof":
                if close is None:
                    return msg
                raise self.error(f"expected '{end}' to close the message opened at line {close.line}")
            if tok.kind != "ident" or tok.text[0] in "+-":
                raise self.error("expected a field name")
            self.i += 1
            msg.fields.append(Field(tok.text, self.field_value(tok), tok.line))
            self.take(",") or self.take(";")

    def field_value(self, name: Token) -> Any:
        colon = self.take(":")
        tok = self.tok
        if tok.kind == "punct" and tok.text in "{<":
            self.i += 1
            return self.fields(tok)
        if not colon:
            raise self.error(f"expected ':' or '{{' after {name.text!r}")
        if tok.kind == "punct" and tok.text == "[":
            self.i += 1
            return self.list_value(tok)
        return self.scalar()

    def list_value(self, open_tok: Token) -> list:
        items: list[Any] = []
        if self.take("]"):
            return items
        while True:
            tok = self.tok
            if tok.kind == "punct" and tok.text in "{<":
                self.i += 1
                items.append(self.fields(tok))
            else:
                items.append(self.scalar())
            if self.take("]"):
                return items
            if not self.take(","):
                raise self.error(f"expected ',' or ']' in the list opened at line {open_tok.line}")

    def scalar(self) -> Any:
        tok = self.tok
        if tok.kind == "string":
            parts = []
            while self.tok.kind == "string":  # "a" "b" is one string, as in C
                parts.append(_unquote(self.tok.text, self.where, self.tok.line))
                self.i += 1
            return "".join(parts)
        self.i += 1
        if tok.kind == "number":
            return _number(tok.text)
        if tok.kind == "ident":
            sign, word = (tok.text[0], tok.text[1:]) if tok.text[0] in "+-" else ("", tok.text)
            if word.lower() in _SPECIAL_FLOATS:
                value = _SPECIAL_FLOATS[word.lower()]
                return -value if sign == "-" else value
            if sign:
                raise self.error("expected a value", tok)
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            return word  # an enum value
        raise self.error("expected a value (a string, number, identifier, '{' or '[')", tok)


def _number(text: str) -> int | float:
    t = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", t):
        return int(t, 16)
    if re.fullmatch(r"[-+]?0[0-7]+", t):
        return int(t, 8)
    if re.fullmatch(r"[-+]?\d+", t):
        return int(t)
    return float(t)


def _unquote(text: str, where: str, line: int) -> str:
    body, out, i = text[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2 :])
            if not m:
                raise SpecError(f"{where}:{line}: bad \\x escape in {text}")
            out.append(chr(int(m.group(), 16)))
            i += 2 + len(m.group())
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1 :])
            assert m is not None  # nxt is an octal digit
            out.append(chr(int(m.group(), 8)))
            i += 1 + len(m.group())
        else:
            raise SpecError(f"{where}:{line}: unknown escape '\\{nxt}' in {text}")
    # protobuf strings are bytes: \xNN escapes of UTF-8 text decode back to the characters they spell
    s = "".join(out)
    try:
        return s.encode("latin-1").decode("utf-8") if any(0x80 <= ord(ch) <= 0xFF for ch in s) else s
    except (UnicodeEncodeError, UnicodeDecodeError):
        return s


def looks_like_prototext(text: str) -> bool:
    """True when the text has a `name {` or a multi-line `name: {` block: protobuf text, never block YAML."""
    for line in text.splitlines():
        s = line.split("#", 1)[0].strip()
        if re.fullmatch(r"[A-Za-z_]\w*\s*(:\s*)?[{<]", s) or re.fullmatch(r"[A-Za-z_]\w*\s*[{<].*", s):
            return True
    return False
