"""The ADQL 2.1 grammar for lark's LALR(1) parser.

Keywords are reserved (the lexer always turns them into keyword tokens, so ``select`` can
never be a column name); function names are ordinary identifiers followed by ``(`` and are
checked against the allowlist after parsing, which keeps the grammar small and lets the
error messages name the function. Conditions and values share one expression grammar (a
separate boolean grammar is not LALR(1) because of parentheses); the tree builder then
checks that conditions stand where conditions belong.

Scalar subqueries and ``IN (…)`` take a query whose first operand is a plain SELECT
(``query_np``): a parenthesised query there would be ambiguous with a parenthesised
expression. ``((SELECT …) UNION …)`` still works in FROM, EXISTS, WITH and at the top.
"""

GRAMMAR = r"""
start: statement
statement: with_clause? query _SEMI?

with_clause: _WITH cte (_COMMA cte)*
cte: ident column_names? _AS _LPAR query _RPAR
column_names: _LPAR ident (_COMMA ident)* _RPAR

query: query_expr order_by? offset?
?query_expr: query_term
    | query_expr _UNION ALL? query_term -> union
    | query_expr _EXCEPT ALL? query_term -> except_
?query_term: query_primary
    | query_term _INTERSECT ALL? query_primary -> intersect
?query_primary: select_core
    | _LPAR query _RPAR -> paren_query

query_np: query_expr_np order_by? offset? -> query
?query_expr_np: query_term_np
    | query_expr_np _UNION ALL? query_term -> union
    | query_expr_np _EXCEPT ALL? query_term -> except_
?query_term_np: select_core
    | query_term_np _INTERSECT ALL? query_primary -> intersect

select_core: SELECT quantifier? top? select_list from_clause where_clause? group_by? having?
quantifier: ALL | DISTINCT
top: _TOP UNSIGNED
select_list: select_item (_COMMA select_item)*
?select_item: STAR -> star
    | qual_prefix STAR -> qualified_star
    | expr alias? -> select_expr
alias: _AS? ident
qual_prefix: ident _DOT | qual_prefix ident _DOT

from_clause: _FROM table_ref (_COMMA table_ref)*
?table_ref: table_primary | joined_table
?table_primary: table_name alias? -> table
    | _LPAR query _RPAR alias -> derived
    | _LPAR table_ref _RPAR
table_name: qual_prefix? ident
joined_table: table_ref join_kind table_primary join_spec? -> join
    | table_ref natural_kind table_primary -> natural_join
    | table_ref _CROSS _JOIN table_primary -> cross_join
join_kind: _JOIN -> inner
    | _INNER _JOIN -> inner
    | _LEFT _OUTER? _JOIN -> left
    | _RIGHT _OUTER? _JOIN -> right
    | _FULL _OUTER? _JOIN -> full
natural_kind: _NATURAL join_kind
join_spec: _ON expr -> on_spec
    | _USING _LPAR ident (_COMMA ident)* _RPAR -> using_spec

where_clause: _WHERE expr
group_by: _GROUP _BY expr (_COMMA expr)*
having: _HAVING expr
order_by: _ORDER _BY sort_item (_COMMA sort_item)*
sort_item: expr (ASC | DESC)?
offset: _OFFSET UNSIGNED

?expr: and_expr
    | expr _OR and_expr -> or_
?and_expr: not_expr
    | and_expr _AND not_expr -> and_
?not_expr: predicate
    | _NOT not_expr -> not_
?predicate: value
    | value COMP_OP value -> compare
    | value _BETWEEN value _AND value -> between
    | value _NOT _BETWEEN value _AND value -> not_between
    | value _LIKE value -> like
    | value _NOT _LIKE value -> not_like
    | value _ILIKE value -> ilike
    | value _NOT _ILIKE value -> not_ilike
    | value _IN _LPAR query_np _RPAR -> in_query
    | value _NOT _IN _LPAR query_np _RPAR -> not_in_query
    | value _IN _LPAR value (_COMMA value)* _RPAR -> in_list
    | value _NOT _IN _LPAR value (_COMMA value)* _RPAR -> not_in_list
    | value _IS NULL -> is_null
    | value _IS _NOT NULL -> is_not_null
    | EXISTS _LPAR query _RPAR -> exists

?value: bitor
    | value _CONCAT bitor -> concat
?bitor: bitxor
    | bitor _PIPE bitxor -> bitor
?bitxor: bitand
    | bitxor _CARET bitand -> bitxor
?bitand: sum
    | bitand _AMP sum -> bitand
?sum: product
    | sum _PLUS product -> add
    | sum _MINUS product -> sub
?product: unary
    | product STAR unary -> mul
    | product _SLASH unary -> div
?unary: primary
    | _MINUS unary -> neg
    | _PLUS unary -> pos
    | _TILDE unary -> bitnot
?primary: UNSIGNED -> number
    | HEX -> hex
    | STRING+ -> string
    | NULL -> null
    | qual_prefix? ident -> column_ref
    | REGULAR _LPAR _RPAR -> call
    | REGULAR _LPAR STAR _RPAR -> call_star
    | REGULAR _LPAR quantifier? expr (_COMMA expr)* _RPAR -> call
    | _LPAR expr _RPAR
    | _LPAR query_np _RPAR -> scalar_subquery
    | CASE expr? when_clause+ else_clause? _END -> case
    | CAST _LPAR expr _AS cast_type _RPAR -> cast
when_clause: _WHEN expr _THEN expr
else_clause: _ELSE expr
cast_type: REGULAR+ (_LPAR UNSIGNED _RPAR)?

ident: REGULAR | DELIMITED

SELECT: "select"i
ALL: "all"i
DISTINCT: "distinct"i
NULL: "null"i
EXISTS: "exists"i
CASE: "case"i
CAST: "cast"i
ASC: "asc"i
DESC: "desc"i
_TOP: "top"i
_FROM: "from"i
_WHERE: "where"i
_GROUP: "group"i
_BY: "by"i
_HAVING: "having"i
_ORDER: "order"i
_OFFSET: "offset"i
_AS: "as"i
_AND: "and"i
_OR: "or"i
_NOT: "not"i
_BETWEEN: "between"i
_LIKE: "like"i
_ILIKE: "ilike"i
_IN: "in"i
_IS: "is"i
_JOIN: "join"i
_INNER: "inner"i
_LEFT: "left"i
_RIGHT: "right"i
_FULL: "full"i
_OUTER: "outer"i
_NATURAL: "natural"i
_CROSS: "cross"i
_ON: "on"i
_USING: "using"i
_UNION: "union"i
_INTERSECT: "intersect"i
_EXCEPT: "except"i
_WITH: "with"i
_WHEN: "when"i
_THEN: "then"i
_ELSE: "else"i
_END: "end"i

REGULAR: /[a-z][a-z0-9_]*/i
DELIMITED: /"(?:[^"]|"")+"/
STRING: /'(?:[^']|'')*'/
UNSIGNED: /(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/
HEX.2: /0[xX][0-9a-fA-F]+/
COMP_OP: /<>|<=|>=|!=|=|<|>/
STAR: "*"
_CONCAT: "||"
_PIPE: "|"
_CARET: "^"
_AMP: "&"
_TILDE: "~"
_PLUS: "+"
_MINUS: "-"
_SLASH: "/"
_DOT: "."
_COMMA: ","
_LPAR: "("
_RPAR: ")"
_SEMI: ";"

COMMENT: /--[^\n]*/
%ignore COMMENT
%ignore /[ \t\r\n\f\v]+/
"""

# How terminals are named in "expected one of" lists, most helpful first.
DISPLAY = {
    "_COMMA": "','",
    "_FROM": "FROM",
    "_AS": "AS",
    "REGULAR": "identifier",
    "DELIMITED": "identifier",
    "_WHERE": "WHERE",
    "_JOIN": "JOIN",
    "_ON": "ON",
    "_USING": "USING",
    "_GROUP": "GROUP BY",
    "_BY": "BY",
    "_HAVING": "HAVING",
    "_ORDER": "ORDER BY",
    "_OFFSET": "OFFSET",
    "_RPAR": "')'",
    "_LPAR": "'('",
    "SELECT": "SELECT",
    "_WITH": "WITH",
    "UNSIGNED": "number",
    "HEX": "number",
    "STRING": "string",
    "NULL": "NULL",
    "STAR": "'*'",
    "_AND": "AND",
    "_OR": "OR",
    "_NOT": "NOT",
    "COMP_OP": "comparison operator",
    "_BETWEEN": "BETWEEN",
    "_LIKE": "LIKE",
    "_ILIKE": "ILIKE",
    "_IN": "IN",
    "_IS": "IS",
    "_UNION": "UNION",
    "_INTERSECT": "INTERSECT",
    "_EXCEPT": "EXCEPT",
    "_INNER": "INNER",
    "_LEFT": "LEFT",
    "_RIGHT": "RIGHT",
    "_FULL": "FULL",
    "_OUTER": "OUTER",
    "_NATURAL": "NATURAL",
    "_CROSS": "CROSS",
    "_TOP": "TOP",
    "ALL": "ALL",
    "DISTINCT": "DISTINCT",
    "EXISTS": "EXISTS",
    "CASE": "CASE",
    "CAST": "CAST",
    "_WHEN": "WHEN",
    "_THEN": "THEN",
    "_ELSE": "ELSE",
    "_END": "END",
    "ASC": "ASC",
    "DESC": "DESC",
    "_CONCAT": "'||'",
    "_PLUS": "'+'",
    "_MINUS": "'-'",
    "_SLASH": "'/'",
    "_PIPE": "'|'",
    "_AMP": "'&'",
    "_CARET": "'^'",
    "_TILDE": "'~'",
    "_DOT": "'.'",
    "_SEMI": "';'",
    "$END": "end of query",
}
RANK = {name: i for i, name in enumerate(dict.fromkeys(DISPLAY.values()))}
