"""The `filter` parameter of Compute Engine `list` calls, as the REST API reads it.

Grammar (the subset Google documents for `instances.list` and the other
list methods, and nothing more):

    expr   := term (("AND" | "OR") term)*     -- AND and OR are not mixed at one level
            | "(" expr ")" ("(" expr ")")*   -- parenthesised terms side by side are ANDed
    term   := FIELD OP VALUE
    OP     := "=" | "!=" | ">" | "<" | ":"     -- comparison form
            | "eq" | "ne"                       -- regular-expression form (RE2, full match)

The two forms are not mixed in one filter. Values may be quoted ("..."). A field
the resource does not have, a malformed expression or a mixed filter is an
error, as the real API answers 400 `invalid` "Invalid list filter expression".
"""
import re

TOKEN = re.compile(r'\s*(\(|\)|!=|=|>|<|:|"(?:[^"\\]|\\.)*"|[^\s()!=<>:"]+)')


class FilterError(ValueError):
    pass


def tokenize(text):
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise FilterError(f"unexpected character at {pos}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def unquote(v):
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return re.sub(r'\\(.)', r'\1', v[1:-1])
    return v


class Parser:
    def __init__(self, tokens):
        self.t, self.i, self.forms = tokens, 0, set()

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self):
        tok = self.peek()
        if tok is None:
            raise FilterError("unexpected end of filter")
        self.i += 1
        return tok

    def parse(self):
        node = self.expr()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.peek()!r}")
        if len(self.forms) > 1:
            raise FilterError("comparison (=, !=) and regular-expression (eq, ne) forms cannot be mixed")
        return node

    def expr(self):
        if self.peek() == "(":
            groups = []
            while self.peek() == "(":
                self.take()
                groups.append(self.expr())
                if self.take() != ")":
                    raise FilterError("missing )")
            joiner = self.peek()
            if joiner in ("AND", "OR"):
                self.take()
                rest = self.expr()
                return (joiner, [("AND", groups), rest])
            return ("AND", groups)
        terms, joiner = [self.term()], None
        while self.peek() in ("AND", "OR"):
            j = self.take()
            if joiner and j != joiner:
                raise FilterError("AND and OR cannot be mixed without parentheses")
            joiner = j
            terms.append(self.term())
        return (joiner or "AND", terms)

    def term(self):
        field = self.take()
        if field in ("(", ")", "AND", "OR"):
            raise FilterError(f"expected a field name, found {field!r}")
        op = self.take()
        if op in ("=", "!=", ">", "<", ":"):
            self.forms.add("comparison")
        elif op in ("eq", "ne"):
            self.forms.add("regexp")
        else:
            raise FilterError(f"expected an operator after {field!r}, found {op!r}")
        value = self.take()
        if value in ("(", ")", "AND", "OR"):
            raise FilterError(f"expected a value after {field} {op}")
        return ("TERM", field, op, unquote(value))


def parse(text):
    """The parsed filter, or None for an empty one; FilterError when malformed."""
    if not text or not text.strip():
        return None
    return Parser(tokenize(text)).parse()


def lookup(resource, field):
    """The value of a dotted field of a resource; KeyError when it has no such field."""
    cur = resource
    parts = field.split(".")
    for n, p in enumerate(parts):
        if isinstance(cur, dict):
            if p in cur:
                cur = cur[p]
            elif n > 0 and parts[n - 1] == "labels":
                return None  # an absent label: matches nothing but !=
            else:
                raise KeyError(field)
        else:
            raise KeyError(field)
    return cur


def matches(node, resource, known_fields):
    if node is None:
        return True
    kind = node[0]
    if kind == "TERM":
        _, field, op, want = node
        root = field.split(".")[0]
        if root not in known_fields:
            raise FilterError(f"unknown field {field!r}")
        try:
            have = lookup(resource, field)
        except KeyError:
            have = None
        have_s = "" if have is None else (str(have).lower() if isinstance(have, bool) else str(have))
        if op == "=":
            return have is not None and have_s == want
        if op == "!=":
            return have is None or have_s != want
        if op == ":":
            return have is not None and want in have_s
        if op in (">", "<"):
            try:
                a, b = float(have_s), float(want)
            except ValueError:
                return (have_s > want) if op == ">" else (have_s < want)
            return a > b if op == ">" else a < b
        try:
            rx = re.compile(want)
        except re.error as e:
            raise FilterError(f"bad regular expression {want!r}: {e}")
        hit = have is not None and rx.fullmatch(have_s) is not None
        return hit if op == "eq" else not hit
    joiner, parts = node
    results = [matches(p, resource, known_fields) for p in parts]
    return all(results) if joiner == "AND" else any(results)
