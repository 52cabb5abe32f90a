"""Stable diagnostic codes and their long explanations (``cbdsl check --explain CODE``).

A code never changes meaning once published. Ranges:

- ``E001``-``E099``: syntax (the parser front end, :mod:`cbdsl.dsl.parse_errors`)
- ``E100``-``E199``: names and resolution (columns, ``let`` names, scorers, methods)
- ``E200``-``E299``: types and values
- ``E300``-``E399``: clause rules (mix, budget, select, dedup, repeats)
- ``W...``: warnings, ``N...``: notes
- ``E900``: an internal error of cbdsl itself (a bug to report, not a policy mistake); ``E901``: a dependency
  missing from the environment
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    title: str
    explanation: str  # the long form: what it means, an example, the fix


CODES: dict[str, Code] = {}


def _code(code: str, title: str, explanation: str) -> None:
    CODES[code] = Code(code, title, explanation.strip("\n"))


# --- syntax -----------------------------------------------------------------------

_code("E001", "unexpected character", """
A character that is not part of the policy language, such as `@`, `$` or a lone `!`.

    filter clip >= 0.3 @ source        # `@` means nothing here

Fix: remove it. Comments start with `#`; text goes in double quotes; `not`
negates and `!=` means 'not equal'.
""")

_code("E002", "unexpected word or symbol", """
The parser found a word or symbol where the clause cannot continue with it.
The message says what it expected instead.

    budget top 100                     # `budget` takes a number

Fix: compare the clause with its form in the language reference
(README.md, 'The language'). Each clause starts with its keyword:
policy, cite, adapt, pool, let, filter, dedup, mix, budget, select.
""")

_code("E003", "the policy ended early", """
The file ends in the middle of a clause, or a clause stops before it is
complete and the next clause begins.

    filter clip >=                     # compared to what?
    budget                             # how many rows?
    select top clip

Fix: finish the clause, or delete it.
""")

_code("E004", "unknown clause keyword", """
A line starts with a word that is not a clause keyword, often a misspelling.

    fliter clip >= 0.3                 # did you mean `filter`?

Fix: every clause starts with one of policy, cite, adapt, pool, let,
filter, dedup, mix, budget, select.
""")

_code("E005", "`=` used to compare", """
`=` names a `let` or a keyword argument; comparing uses `==`.

    filter source = "coco"             # wrong
    filter source == "coco"            # right
""")

_code("E006", "missing comma", """
Two arguments, list items, cited methods or mix entries follow each other
without a comma between them.

    let clip = clip_score(model="ViT-L-14" pretrained="openai")   # wrong
    let clip = clip_score(model="ViT-L-14", pretrained="openai")  # right
""")

_code("E007", "unbalanced bracket", """
A `(`, `[` or `{` is never closed, or a `)`, `]` or `}` closes nothing or the
wrong kind of bracket.

    mix by source { coco: 0.5, *: 0.5        # the `{` is never closed

Fix: close each bracket with its partner, innermost first.
""")

_code("E008", "unterminated string", """
A string starts with a quote but the line ends before the closing quote.
Strings cannot span lines.

    pool "demo                         # wrong
    pool "demo"                        # right

Write `\\"` for a double quote inside a string.
""")

_code("E009", "reserved word used as a name", """
`true`, `false` and `not` are reserved: wherever a name could stand, they
stand for the boolean literals and negation instead, so a `let`, a column, a
parameter or a method named after one could never be referred to.

    let true = words(text) > 2         # wrong: `true` is the boolean
    let not = 1                        # wrong: `not` negates
    filter quantile(x, 0.3, true=1)    # wrong: a keyword argument
    let is_long = words(text) > 2      # right

The other keywords (policy, let, filter, top, by, per, tokens, ...) may be
used as names where the keyword itself cannot stand (`let top = ...`,
`mix by pool { ... }`), though a distinct name reads better. Mix keys are
group values, not names, so `mix by flag { true: 0.2, false: 0.8 }` is fine.
""")

_code("E010", "expression nested too deeply", """
An expression nests more than 100 levels deep. Every level counts: each
operator (`and`, `or`, `+`, ...), `not`, unary `-` and pair of parentheses is
one, and each call, comparison and list is two. A chain nests too: `a and b
and c` reads as `(a and b) and c`, one level per `and`. No policy a person
writes needs that many; a generated one should name its parts.

    filter a + (b + (c + (d + ...)))   # hundreds of levels
    filter ((((((((x)))))))) > 1       # each pair of parentheses is a level
    filter c1 and c2 and ... and c200  # a chain of 200 conditions

Fix: split it into `let` names and combine those; a long `and` chain in a
`filter` can be several `filter` clauses, which are one conjunction.
""")

_code("E011", "number out of range", """
A number literal has no finite value: a float beyond about 1.8e308, or an
integer more than 300 digits long (a percentage is a float too).

    filter loss < 1e999                # infinite

Fix: use a number in range; no count, threshold or seed needs more.
""")

# --- names and resolution -------------------------------------------------------

_code("E101", "unknown name", """
A bare name in an expression is neither a column of the pool nor a `let`.

    filter word_count(txt) > 2         # the pool has `text`, not `txt`

Fix: use a column of the pool (`cbdsl pool info` lists them) or define the
name with `let` first. A scorer is called with parentheses: `clip_score()`,
not `clip_score`.
""")

_code("E102", "unknown function or scorer", """
A call names something that is neither a builtin function, a statistic nor a
scorer of the registry.

    filter word(text) > 2              # did you mean `words`?

Fix: correct the spelling; `cbdsl methods` lists the methods and the
scorers they use.
""")

_code("E103", "scorer not available yet", """
The method catalogue names this scorer, but its implementation has not landed
yet: it comes with the scorer library (pending). The policy is well formed
otherwise; it cannot run until the scorer exists.

    let clip = clip_score(model="ViT-L-14")    # pending

Fix: until it lands, use the scorers that exist (`len`, `words`, `width`,
`height`, `area`, `aspect_ratio`, the statistics) or a precomputed column of
the pool.
""")

_code("E104", "`let` names depend on each other in a cycle", """
A `let` is defined in terms of itself, directly or through other `let`s, so
it has no value.

    let a = b + 1
    let b = a * 2                      # a -> b -> a

Fix: break the cycle: define one of them from columns and scorers only.
""")

_code("E105", "`let` name defined twice", """
Two `let` clauses give the same name. Names are never shadowed, so one of
them would be silently ignored.

    let clip = clip_score(model="ViT-B-32")
    let clip = clip_score(model="ViT-L-14")     # defined twice

Fix: rename one (`let clip_l14 = ...`) or delete it.
""")

_code("E106", "`let` name is a column of the pool", """
A `let` takes the name of a column of the pool. Names are never shadowed:
every later use would be ambiguous.

    let text = lower(text)             # `text` is a column

Fix: give the `let` its own name: `let text_lower = lower(text)`.
""")

_code("E107", "unknown method id", """
`cite` and `adapt` name methods of the catalogue by id, and this id is not in
it.

    cite el2n, clipscore               # did you mean `clip_score`?

Fix: use an id from `cbdsl methods` (the catalogue lists every published
method the scorers implement, with its citation).
""")

_code("E108", "unknown keyword parameter", """
A call passes a keyword parameter that the function, scorer, strategy or
dedup method does not take.

    filter quantile(clip, quantile=0.3) <= clip    # the parameter is `q`

Fix: use one of the parameters the message lists; `cbdsl methods ID` shows
a method's canonical call.
""")

_code("E109", "not a function here", """
A call names something that exists but cannot be called in an expression:
a `let` or a column (they are values, written without parentheses), a
`select` strategy or a `dedup` method (they only go in their clause).

    filter kcenter(embedding) > 0      # kcenter is a select strategy
    select kcenter(embedding, seed=0)  # right

    let clip = clip_score()
    filter clip() > 0.3                # wrong: `clip` is a let
    filter clip > 0.3                  # right
""")

_code("E110", "unknown select strategy", """
`select` names a strategy that does not exist. The strategies are `top E`,
`bottom E`, `random(seed)`, `weighted(E, seed)`, `kcenter(EMB, seed)` and
`stratified(COL)`.

    select randm(seed=1)               # did you mean `random`?
""")

_code("E111", "unknown dedup method", """
`dedup` names a method that does not exist. The methods are
`exact(*cols)`, `minhash(text, threshold=0.8, num_perm=128, ngram=5)` and
`semantic(embedding, eps=0.05, keep="hard")`.

    dedup minhsh(text)                 # did you mean `minhash`?
""")

_code("E112", "an evaluation set or ground truth is named", """
A policy reads only the pool and the scorers (design rule 8). The pool's
`eval` assets (the evaluation sets the backend scores on and the audit
compares against) and `truth` assets (ground truth such as the demo's defect
labels) are the benchmark's, so a policy cannot name them: not in
`asset("...")`, not as any scorer's or function's parameter.

    filter id in asset("demo-defects")         # the demo's ground truth
    filter text in asset("mini-eval")          # the evaluation set

Fix: curate from the pool's columns and scores. POOL.md (or
`cbdsl pool info POOL`) lists the assets a policy may name. The check
needs the pool to know an asset's kind: `cbdsl check --pool DIR`,
`cbdsl compile` and `cbdsl run` always have it.
""")

_code("E113", "unknown asset", """
`asset("name")` names an asset the pool does not have. Assets are files
registered into the pool by whoever runs the benchmark:

    cbdsl pool add-asset POOL icons-133k icons-133k.txt

Fix: use a name the pool lists (POOL.md, `cbdsl pool info POOL`), or
register the file first.
""")

_code("E114", "the pool is named by a path", """
`pool "..."` names a pool of the pool roots (`$CBDSL_POOLS`,
`~/.cbdsl/pools`, or the sandbox's own pool), never a directory: a policy
cannot point the run at files of its own choosing (design rule 8).

    pool "/data/other-pool"                    # a path
    pool "demo"                                # a name

Fix: name the pool. To run a policy on a pool directory, whoever runs it
gives the directory: `cbdsl run policy.cur --pool DIR`.
""")

# --- types and values ---------------------------------------------------------

_code("E201", "filter condition is not true/false", """
A `filter` keeps the rows where its condition is true, so the condition must
be a boolean: a comparison, `and`/`or`/`not`, `in`, `matches(...)`, `top(...)`.

    filter words(text)                 # a number, not true/false
    filter words(text) > 2             # right
""")

_code("E202", "arithmetic needs numbers", """
`+`, `-`, `*`, `/` and unary minus work on numbers only (int widens to
float). Strings, booleans, lists and embeddings cannot take part.

    let n = text + 1                   # `text` is a string
    let n = len(text) + 1              # right
""")

_code("E203", "`and`, `or` and `not` need true/false", """
The boolean operators combine conditions; each side must be a comparison or
another boolean.

    filter words(text) and width > 200          # `words(text)` is a number
    filter words(text) > 2 and width > 200      # right
""")

_code("E204", "values that cannot be compared", """
A comparison has a value of one kind on one side and another kind on the
other: a string against a number, or a boolean ordered with `<`.

    filter source > 3                  # `source` is a string
    filter source == "coco"            # right
""")

_code("E205", "`in` needs a list of the same kind", """
`x in [...]` and `x not in [...]` need a list (or an asset such as an id
list) on the right, and its items must be the same kind as `x`.

    filter source in "coco"            # a string, not a list
    filter source in ["coco", "vg"]    # right
""")

_code("E206", "embedding used as a number", """
An embedding is a vector: it has no order and no arithmetic. It goes only
where an embedding is expected: `select kcenter(EMB)`, `dedup semantic(EMB)`
and the scorers that take one (`centroid_distance(EMB)`, ...).

    filter image_embedding() > 0.5                     # wrong
    select kcenter(image_embedding(), seed=0)          # right
""")

_code("E207", "argument of the wrong type", """
An argument does not have the type the function, scorer or strategy reads.

    filter words(width) > 2            # `words` reads text; `width` is a number
    select top source                  # `top` ranks by a number

Fix: pass a value of the type the message names; the signature is in the hint.
""")

_code("E208", "parameter of the wrong type", """
A keyword (or positional) parameter has a literal of the wrong type.

    let clip = clip_score(model=3)     # the model is a name, a string
    select random(seed=1.5)            # a seed is a whole number
""")

_code("E209", "parameter value out of range", """
A parameter's value is outside what the method accepts. Fractions such as
the quantile `q` lie between 0 and 1; a percentage literal counts as a
fraction (`30%` is 0.30).

    filter clip >= quantile(clip, 30)          # q must be at most 1
    filter clip >= quantile(clip, 30%)         # right
    dedup semantic(emb, eps=-0.1)              # eps must be positive
""")

_code("E210", "parameter is not a constant", """
Parameters configure a scorer or statistic once for the whole pool, so they
must be literals (numbers, percentages, strings, true/false, lists of them),
not expressions that vary per row.

    filter clip >= quantile(clip, q)           # `q` is a column
    filter clip >= quantile(clip, 0.3)         # right
""")

_code("E211", "missing argument", """
A call leaves out an argument or parameter that has no default.

    filter clip >= quantile(clip)              # which quantile?
    filter clip >= quantile(clip, 0.3)         # right
""")

_code("E212", "too many arguments", """
A call passes more positional arguments than the function takes.

    filter log(width, 2) > 1                   # `log` takes one argument

Fix: remove the extra arguments, or pass parameters by keyword.
""")

_code("E213", "argument given twice", """
The same argument is passed twice: by position and by keyword, or by two
keywords of the same name.

    filter clip >= quantile(clip, 0.3, q=0.5)
""")

_code("E214", "invalid regular expression", """
The pattern of `matches(text, pattern)` is not a valid regular expression
(Python's `re` syntax); the message quotes the regex engine's complaint.

    filter matches(text, "[a-z")               # the `[` is never closed
    filter matches(text, "[a-z]+")             # right
""")

_code("E215", "`per` on something that is not a statistic", """
`per COLUMN` computes a statistic (quantile, mean, std, rank, zscore,
minmax, top) within each group. Other calls are row by row, so grouping
means nothing for them.

    filter words(text) per source > 2                       # wrong
    filter clip >= quantile(clip, 0.3) per source           # right
""")

_code("E216", "`among` on something that is not a statistic", """
`among CONDITION` computes a statistic over the rows where the condition
holds. Other calls are row by row, so `among` means nothing for them.

    filter words(text) among (width > 200) > 2              # wrong
    filter clip >= quantile(clip, 0.7) among (words(text) > 2)   # right
""")

_code("E217", "`among` condition is not true/false", """
`among` takes a condition. Written without parentheses, `among` binds only
the next atom, so `among words(text) > 2` reads as
`(... among words(text)) > 2`.

    filter clip >= quantile(clip, 0.7) among words(text) > 2      # wrong
    filter clip >= quantile(clip, 0.7) among (words(text) > 2)    # right
""")

_code("E218", "cannot group by this value", """
`per`, `mix by` and `stratified` group rows by the value of a column or a
`let`. Embeddings, lists, image bytes and assets have no groups.

    filter clip >= quantile(clip, 0.3) per image_embedding      # wrong
    filter clip >= quantile(clip, 0.3) per source               # right
""")

_code("E219", "list items of different kinds", """
All items of a list literal must be the same kind (all strings, or all
numbers).

    filter source in ["coco", 3]               # a string and a number
""")

_code("E220", "a column name is needed", """
This argument must name a column (or a `let`), not compute an expression.

    select stratified(lower(source))           # wrong
    let source_lower = lower(source)
    select stratified(source_lower)            # right
""")

_code("E221", "regular expression too large to run", """
A `matches` pattern runs on Polars' regex engine, whose matching time and
memory grow with the size of the compiled pattern, and counted repetition
multiplies that size: `a{100000}` took minutes on one long text, and
`\\w{1000}` does not compile at all (each Unicode `\\w` is some 50 KB).
The checker estimates the compiled size and refuses a pattern above about
4 MB, or one whose groups nest more than 100 deep.

    filter matches(text, "\\w{1000}")                # too large
    filter matches(text, "\\w{40,}")                 # a word of 40 or more word characters: fine

Fix: repeat less, or split the test into several `matches` joined with
`and`.
""")

# --- clause rules -------------------------------------------------------------

_code("E301", "clause given twice", """
`policy`, `pool`, `budget`, `select` and `mix` can each appear at most once.
(`cite`, `adapt`, `let`, `filter` and `dedup` can repeat.)

    budget 10000
    budget 5000                        # which one?

Fix: keep one of them. Several filters form one conjunction; several
groupings go in one `mix`.
""")

_code("E302", "mix weight is not positive", """
Each mix weight is a share of the budget and must be greater than zero.

    mix by source { coco: 0.5, vg: 0, *: 0.5 }  # wrong
    filter source != "vg"                        # drop a group with a filter
""")

_code("E303", "mix group listed twice", """
A mix names the same group twice, or `*` (every group not listed) more than
once.

    mix by source { coco: 0.5, coco: 0.2, *: 0.3 }
""")

_code("E304", "mix lists no groups", """
`mix by COL { }` gives no shares. List the groups and their weights, with
`*` for every group not listed:

    mix by source { coco: 0.5, *: 0.5 }
""")

_code("E305", "budget is not a positive whole number", """
A row budget (`budget 10000`) or token budget (`budget 2_000_000 tokens`)
counts rows or tokens: a whole number greater than zero.

    budget 0                           # wrong
    budget 0.5                         # wrong: write `budget 50%` for half the pool
""")

_code("E306", "budget percentage out of range", """
A percentage budget is a share of the pool, greater than 0% and at most 100%.

    budget 0%                          # wrong
    budget 150%                        # wrong
    budget 1.5%                        # right
""")

_code("E307", "token budget counts something that is not a number", """
`budget N tokens of EXPR` sums EXPR over the selected rows, so EXPR must be a
number per row.

    budget 2_000_000 tokens of text            # a string
    budget 2_000_000 tokens of words(text)     # right
""")

# --- warnings and notes -------------------------------------------------------

_code("W001", "mix weights do not sum to 1", """
The weights of a mix are shares of the budget. When they do not add up to 1
(100%), cbdsl divides each by their sum and says so; the warning shows the
normalized weights.

    mix by source { coco: 2, vg: 1, *: 1 }      # normalized to 0.5, 0.25, 0.25

Fix: write the normalized weights to silence the warning.
""")

_code("W002", "adapted method is not cited", """
`adapt ID "why"` explains how the policy departs from a method; the method
should also be cited, so the scaffold checks and the ledger see it.

    adapt el2n "contrastive loss of a 1-epoch proxy"   # but no `cite el2n`

Fix: add `cite el2n`.
""")

_code("W003", "`let` is never used", """
A `let` that no filter, dedup, mix, budget, select or other `let` refers to
computes nothing (the planner skips it) and is probably a leftover.

    let clip = clip_score()            # never used

Fix: use it, or delete it.
""")

_code("N001", "column checks deferred", """
No pool schema was given, so every name that is not a `let` is taken as a
column of unknown type and its checks wait until the policy meets a pool.

    filter words(txt) > 2              # `txt` passes for now: is it a column?

Fix: check against the pool, which knows its columns and their types:
`cbdsl check --pool DIR policy.cur` (then `txt` is reported if the pool
has no such column).
""")

_code("E900", "internal error", """
cbdsl itself failed on this input. This is a bug in cbdsl, not in your policy.
Please report it with the policy file and the command you ran.
""")

_code("E901", "a dependency is not installed", """
A command needs a Python package that this environment lacks (an install
that went wrong, or a machine that only has part of cbdsl's dependencies).
Nothing is wrong with your policy.

Fix: install cbdsl's dependencies again (`./setup.sh`, or `pip install -e .`
in the checkout), or the package the message names.
""")


def explain(code: str) -> Code | None:
    return CODES.get(code.strip().upper())
