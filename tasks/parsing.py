"""Field-generic answer parsing: read a model's generated answer back into a catalog's fields.

A task declares its fields (name, parse rule, label aliases) and instantiates one ``AnswerParser``; the
same rules then serve any catalog and any number of fields. The rules favour *trust* over
leniency, because a parser that invents fields makes the harness print wrong numbers:

- A value is what follows its label, exactly: no cutting at sentence ends (titles such as
  "St. James Trench Coat" or "Trench Coat 2.0" must round-trip), no stripping of quotes.
- Descriptive prose never becomes fields: the label-less "Title, CATEGORY, 1290.0" form applies
  only when its last part is wholly a price-shaped token, and a bare number in prose is never a
  price (only a currency-marked amount is, and only when no price label was written).
- The parser never raises: a parser bug costs one sample's fields, never a run.

Pure Python + ``re``: tasks are text, images and numbers (no torch/transformers/pandas here).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

RULES = ("text", "number", "price")  # a field kind (tasks/kinds.py) names the rule its values follow
_NUMERIC = ("number", "price")

# ---------------------------------------------------------------- numbers

# Digit grouping (1,290 / 1.290 / 1 290 with a no-break or thin space / 1'290) needs a leading
# group of 1-3 digits that does not start with 0, so "0.125" stays a decimal. A number starts only
# where no number runs on, and is matched atomically: searches stay linear on digit-heavy junk.
_NUM = (
    r"(?<!\d)(?<!\d[,.\u00a0\u202f'])"
    r"(?>[1-9]\d{0,2}(?:[,.\u00a0\u202f']\d{3})++(?!\d)(?:[.,]\d++)?|\d++(?:[.,]\d++)?)"
)
_NUM_RE = re.compile(_NUM)
_GROUPED = re.compile(
    r"[1-9]\d{0,2}(?P<g>[,.\u00a0\u202f'])\d{3}(?:(?P=g)\d{3})*(?:(?P<d>[.,])(?P<frac>\d+))?"
)
_NOT_LETTER_BEFORE = r"(?<![^\W\d_])"  # not preceded by a (Unicode) letter
_NOT_LETTER_AFTER = r"(?![^\W\d_])"
_CUR_PREFIX = rf"(?:US\$|\$|€|£|{_NOT_LETTER_BEFORE}(?:USD|EUR|GBP){_NOT_LETTER_AFTER})"
_CUR_SUFFIX = rf"(?:\$|€|£|{_NOT_LETTER_BEFORE}(?:USD|EUR|GBP|dollars?|euros?){_NOT_LETTER_AFTER})"
# A currency-marked amount anywhere in prose ("costs about $450"): the only price read without a label.
_LOOSE_PRICE = re.compile(rf"{_CUR_PREFIX}[ \t\u00a0]?{_NUM}|{_NUM}[ \t\u00a0]?{_CUR_SUFFIX}", re.IGNORECASE)
# A whole part that is a price and nothing else: "450.0", "$1,290.00", "USD 1290", "1290 USD", "€1.290,00".
_PRICE_TOKEN = re.compile(
    rf"(?:{_CUR_PREFIX}[ \t\u00a0]?)?{_NUM}(?:[ \t\u00a0]?{_CUR_SUFFIX})?", re.IGNORECASE
)


def parse_number(text: str) -> float | None:
    """The first number in ``text`` as a finite float, or None.

    '$1,290.00', 'USD 1290', '1290 USD', '1.290,00 €', '12,345,678' -> grouped thousands; '99,5' ->
    decimal comma. A single separator followed by exactly three digits is read as thousands
    ('1.290' -> 1290.0), the catalog-price reading. Signs are ignored (prices are magnitudes).
    """
    if not isinstance(text, str):
        return None
    match = _NUM_RE.search(text)
    if not match:
        return None
    token = match.group(0)
    grouped = _GROUPED.fullmatch(token)
    if grouped:
        whole = token[: grouped.start("d")] if grouped["d"] else token
        digits = re.sub(r"\D", "", whole) + (f".{grouped['frac']}" if grouped["d"] else "")
    else:
        digits = token.replace(",", ".")
    try:
        value = float(digits)
    except ValueError:  # a malformed grouping such as "1.290,000,5": no trustworthy number
        return None
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- fields


@dataclass(frozen=True)
class ParseField:
    """One field of an answer template.

    ``rule``: "text" (the value as written: a product name, a category), "number" (the first number
    of the value) or "price" (a number; also read from a currency-marked amount when no label was
    written).
    ``labels``: aliases a model writes before a colon, case-insensitive; the first is the template's.
    """

    name: str
    rule: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        labels = (self.labels,) if isinstance(self.labels, str) else tuple(self.labels)
        object.__setattr__(self, "labels", labels)  # lists from a config file become hashable tuples
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"field name must be a non-empty string, got {self.name!r}")
        if self.rule not in RULES:
            raise ValueError(f"field {self.name!r}: rule must be one of {RULES}, got {self.rule!r}")
        if not labels or not all(isinstance(label, str) and label.strip() for label in labels):
            raise ValueError(f"field {self.name!r}: labels must be non-empty strings, got {self.labels!r}")


# ---------------------------------------------------------------- the parser

_MARK = r"(?:\*\*?|__?)"  # markdown emphasis around a label: **Product:**, **Product**:, __x__, *x*
# Special tokens a decoder may leave in the text (<|end|>, <|endoftext|>, </s>, ...): read as line breaks.
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|\s]{1,40}\|>|</s>|<eos>|<end_of_turn>|<pad>")
_EOL = re.compile(r"[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # the line breaks of str.splitlines
_EMPHASIS = ("**", "__", "`", "*", "_")
_BARE_TOKEN_PARTS = 8  # a price token holds at most 7 commas (1,000,000,000,000,000,000)


def _clean(raw: str, *, separator: bool = True, dangling: str | None = None) -> str | None:
    """A text value as written: surrounding whitespace, one trailing field separator, and markdown
    emphasis only when balanced on both ends (or the closer of a label's unclosed opener) go."""
    value = raw.strip()
    if separator and value[-1:] in (",", ";", "|", "，", "；", "｜"):
        value = value[:-1].rstrip()  # one only: "Scarf,, Category:" renders the title "Scarf,"
    if dangling and len(value) > len(dangling) and value.endswith(dangling):
        value = value[: -len(dangling)].rstrip()  # "**Product: Leather Boots**"
    for _ in range(3):  # "***x***", "**`x`**"; bounded, so a run of asterisks costs linear time
        mark = next(
            (m for m in _EMPHASIS if len(value) > 2 * len(m) and value.startswith(m) and value.endswith(m)),
            None,
        )
        if mark is None:
            break
        value = value[len(mark) : -len(mark)].strip()
    return value or None


class AnswerParser:
    """Reads ``{field name: value}`` from a generated answer, for a field list in template order.

    Forms, in order of trust:
    1. Labelled: ``Label: value`` pairs in any order, separated by commas, newlines, semicolons or
       pipes; markdown, bullets and a short parenthetical (``PRICE (USD):``) around labels are fine.
       A value runs to the next label or the end of its line. The first occurrence of a field wins.
    2. Bare positional (no label at all, one line): "Title, CATEGORY, 1290.0", only when the last
       field is numeric and the last comma-separated part is wholly a price-shaped token.
    3. Loose price: with no price label written, a currency-marked amount anywhere ("about $450").
    Anything else (descriptive prose) leaves the fields None.
    """

    def __init__(self, fields: Sequence[ParseField]):
        self.fields: tuple[ParseField, ...] = tuple(fields)
        if not self.fields:
            raise ValueError("an answer parser needs at least one field")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names: {names}")
        owner: dict[str, ParseField] = {}
        for field in self.fields:
            for label in field.labels:
                key = " ".join(label.split()).casefold()
                if owner.setdefault(key, field) is not field:
                    raise ValueError(
                        f"label {label!r} belongs to both {owner[key].name!r} and {field.name!r}"
                    )
        # Longest alias first, so "Product type" (category) beats "Product" (name) where both could match.
        aliases = sorted(
            ((label, field) for field in self.fields for label in field.labels), key=lambda a: -len(a[0])
        )
        self._alias_field = {f"a{i}": field for i, (_, field) in enumerate(aliases)}
        alternation = "|".join(
            f"(?P<a{i}>" + r"[ \t]++".join(map(re.escape, label.split())) + ")"
            for i, (label, _) in enumerate(aliases)
        )
        # Not preceded by a letter or "_" (so "Subtitle:" is not "title:", "my_item:" not "item:").
        # Possessive whitespace: consecutive optional runs must not backtrack (polynomial on long blanks).
        self._label_re = re.compile(
            rf"(?<![^\W\d])(?P<open>{_MARK})?(?:{alternation})"
            rf"[ \t]*+(?P<c1>{_MARK})?(?:[ \t]*+\([^()\n]{{0,30}}\))?[ \t]*+(?P<c2>{_MARK})?[ \t]*+[:：]"
            rf"(?:(?P<c3>{_MARK})(?=\s|$))?",
            re.IGNORECASE,
        )
        prices = [f for f in self.fields if f.rule == "price"]
        # With two price fields a loose "$450" could be either: read it only when there is one.
        self._loose_field = prices[0] if len(prices) == 1 else None

    def __call__(self, text: object) -> dict[str, str | float | None]:
        """Every field name as a key; str values non-empty or None, numbers finite or None. Never raises."""
        try:
            parsed = self._parse(text) if isinstance(text, str) else {}
        except Exception:  # noqa: BLE001 - a parser bug must cost one sample's fields, never the run
            parsed = {}
        return {f.name: _checked(f, parsed.get(f.name)) for f in self.fields}

    # -- forms

    def _parse(self, text: str) -> dict[str, str | float | None]:
        text = _SPECIAL_TOKEN.sub("\n", text)
        matches = list(self._label_re.finditer(text))
        found: dict[str, str | float | None] = {}
        for i, match in enumerate(matches):
            field = next(self._alias_field[k] for k in self._alias_field if match.group(k) is not None)
            if field.name in found:
                continue
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            eol = _EOL.search(text, match.end(), end)
            raw = text[match.end() : eol.start() if eol else end]
            unclosed = match["open"] if not (match["c1"] or match["c2"] or match["c3"]) else None
            found[field.name] = self._value(field, raw, dangling=unclosed)
        if not matches and (bare := self._bare(text)) is not None:
            return bare
        loose = self._loose_field
        if loose is not None and loose.name not in found and (amount := _LOOSE_PRICE.search(text)):
            found[loose.name] = parse_number(amount.group(0))
        return found

    def _value(self, field: ParseField, raw: str, *, dangling: str | None = None, separator: bool = True):
        if field.rule in _NUMERIC:
            return parse_number(raw)
        return _clean(raw, separator=separator, dangling=dangling)

    def _bare(self, text: str) -> dict[str, str | float | None] | None:
        """'Title, CATEGORY, 1290.0': the fields after the first take one part each from the right, the
        first takes the rest (a title may hold commas). None unless the last part is a price token."""
        last = self.fields[-1]
        line = text.strip()
        if last.rule not in _NUMERIC or not line or _EOL.search(line):
            return None
        parts = line.split(",")
        # The longest price-shaped tail wins, so "$1,290.00" is one token, not "$1" and "290.00".
        for k in range(min(len(parts), _BARE_TOKEN_PARTS), 0, -1):
            token = ",".join(parts[-k:]).strip()
            if _PRICE_TOKEN.fullmatch(token):
                break
        else:
            return None
        rest, n = parts[:-k], len(self.fields)
        if len(rest) < n - 1 or (value := parse_number(token)) is None:
            return None  # fewer parts than fields: not this form
        cut = len(rest) - (n - 2)
        pieces = [",".join(rest[:cut]), *rest[cut:]] if n > 1 else []
        out = {
            f.name: self._value(f, piece, separator=False)
            for f, piece in zip(self.fields, pieces, strict=False)
        }
        out[last.name] = value
        return out


def _checked(field: ParseField, value: object) -> str | float | None:
    """The output contract, enforced whatever happened above: non-empty str, finite float, or None."""
    if field.rule in _NUMERIC:
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
    return value if isinstance(value, str) and value else None
