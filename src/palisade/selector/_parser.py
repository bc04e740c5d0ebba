"""Parser from selector text to the tree in :mod:`._ast` (spec 1.2 and 1.4).

The grammar is small, but nesting depth is bounded only by the text length, so instead of
recursive descent this is a loop over an explicit stack of open parenthesised groups. The
result is the same tree a recursive-descent parser would build:

- runs of ``&&`` (or ``||``) at one level become one n-ary node; a parenthesised group is
  one operand of its parent and is never merged into it;
- a group, or a whole selector, with a single operand adds no node;
- a run of ``!`` keeps only its parity, and applies to the primary or group after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from palisade.selector._ast import (
    All,
    And,
    Compare,
    CompareOp,
    Global,
    Has,
    Membership,
    Node,
    Not,
    Or,
    SetOp,
)
from palisade.selector._errors import SelectorError
from palisade.selector._tokenizer import Token, Tokenizer, TokenKind

_COMPARE_OPS = {
    TokenKind.EQ: CompareOp.EQ,
    TokenKind.NE: CompareOp.NE,
    TokenKind.CONTAINS: CompareOp.CONTAINS,
    TokenKind.STARTS_WITH: CompareOp.STARTS_WITH,
    TokenKind.ENDS_WITH: CompareOp.ENDS_WITH,
}
_SET_OPS = {TokenKind.IN: SetOp.IN, TokenKind.NOT_IN: SetOp.NOT_IN}


@dataclass(slots=True)
class _Group:
    """One open ``(`` (or the top level): the operands collected so far."""

    negate: bool
    position: int
    or_operands: list[Node] = field(default_factory=list)
    and_operands: list[Node] = field(default_factory=list)

    def close(self, last: Node) -> Node:
        self.and_operands.append(last)
        self.or_operands.append(_nary(And, self.and_operands))
        group = _nary(Or, self.or_operands)
        return Not(group) if self.negate else group


def _nary(kind: type[And] | type[Or], operands: list[Node]) -> Node:
    return operands[0] if len(operands) == 1 else kind(tuple(operands))


def parse_tree(text: str) -> Node:
    """Parse ``text`` into a tree, or raise :class:`SelectorError`."""
    tokens = Tokenizer(text)
    token = tokens.next()
    if token.kind is TokenKind.EOF:
        return All()
    groups = [_Group(negate=False, position=0)]
    previous = "start of selector"
    while True:
        # Expecting an operand: any number of '!', then '(' or a primary.
        negate = False
        while token.kind is TokenKind.NOT:
            negate = not negate
            previous = "'!'"
            token = tokens.next()
        if token.kind is TokenKind.LPAREN:
            groups.append(_Group(negate=negate, position=token.position))
            previous = "'('"
            token = tokens.next()
            continue
        node = _primary(token, tokens, previous)
        if negate:
            node = Not(node)
        token = tokens.next()
        # After an operand: '&&', '||', ')' or the end.
        while True:
            kind = token.kind
            if kind is TokenKind.AND:
                groups[-1].and_operands.append(node)
                break
            if kind is TokenKind.OR:
                group = groups[-1]
                group.and_operands.append(node)
                group.or_operands.append(_nary(And, group.and_operands))
                group.and_operands = []
                break
            if kind is TokenKind.RPAREN:
                if len(groups) == 1:
                    raise SelectorError(token.position, "unmatched ')'")
                node = groups.pop().close(node)
                token = tokens.next()
                continue
            if kind is TokenKind.EOF:
                if len(groups) > 1:
                    opened = groups[-1].position
                    raise SelectorError(
                        token.position, f"expected ')' to close the '(' at position {opened}"
                    )
                return groups[0].close(node)
            raise SelectorError(
                token.position,
                f"unexpected {token.describe()}; expected '&&', '||', ')' or end of input",
            )
        previous = repr(kind.value)
        token = tokens.next()


def _primary(token: Token, tokens: Tokenizer, previous: str) -> Node:
    kind = token.kind
    if kind is TokenKind.HAS:
        return Has(token.value)
    if kind is TokenKind.ALL:
        return All()
    if kind is TokenKind.GLOBAL:
        return Global()
    if kind is not TokenKind.LABEL:
        raise SelectorError(
            token.position, f"expected an expression after {previous}, found {token.describe()}"
        )
    # The tokenizer guarantees an operator follows a label.
    operator = tokens.next()
    compare_op = _COMPARE_OPS.get(operator.kind)
    if compare_op is not None:
        literal = tokens.next()
        if literal.kind is not TokenKind.STRING:
            raise SelectorError(
                literal.position, f"expected string literal after {operator.kind.value!r}"
            )
        return Compare(token.value, compare_op, literal.value)
    return Membership(token.value, _SET_OPS[operator.kind], _string_set(operator, tokens))


def _string_set(operator: Token, tokens: Tokenizer) -> tuple[str, ...]:
    brace = tokens.next()
    if brace.kind is not TokenKind.LBRACE:
        raise SelectorError(brace.position, f"expected '{{' after {operator.kind.value!r}")
    values: list[str] = []
    item = tokens.next()
    while item.kind is not TokenKind.RBRACE:
        if item.kind is not TokenKind.STRING:
            raise SelectorError(
                item.position, f"expected string literal or '}}' in set, found {item.describe()}"
            )
        values.append(item.value)
        separator = tokens.next()
        if separator.kind is TokenKind.RBRACE:
            break
        if separator.kind is not TokenKind.COMMA:
            raise SelectorError(
                separator.position, f"expected ',' or '}}' in set, found {separator.describe()}"
            )
        item = tokens.next()
    return tuple(values)
