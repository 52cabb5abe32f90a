"""Whitespace as the reference tools define it, as regex class bodies for Polars' regex engine.

Shared by the ``words`` lowering (:mod:`cbdsl.scorers.metadata`) and its fast comparison path
(:meth:`cbdsl.compiler.lower.ExprLowering._words_test`), which must agree character for character.
No imports: the check path loads this module.
"""

#: Python's whitespace (``str.isspace``, what ``str.split()`` splits on): the Unicode White_Space
#: set that Polars' ``\s`` matches, plus U+001C-U+001F (file, group, record and unit separators),
#: which Python splits on and Unicode does not call white space. tests/test_words.py checks it
#: against ``str.isspace`` over every code point.
PY_SPACE = r"\s\x1C-\x1F"

#: fastText's separators (``Dictionary::readWord``): space, \n, \r, \t, \v, \f and NUL, bytes that
#: never occur inside a UTF-8 multi-byte character, so counting characters counts bytes. NBSP,
#: U+3000 and the U+2000 spaces are word characters to fastText.
FASTTEXT_SPACE = r" \n\r\t\x0B\x0C\x00"
