"""Word expansion: BuildKit's ProcessWord / ProcessWords behaviour, as tables."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.dockerfile.shell import Lexer, go_quote
from dockyard.errors import ExpansionError

ERROR = object()

# The environment BuildKit's own expansion table runs with.
ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}

# (word, expected result or ERROR) with ENV and the backslash escape.
WORD_CASES: list[tuple[str, object]] = [
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ("he'llo", ERROR),
    ("he\\'llo", "he'llo"),
    ("he\\\\'llo", ERROR),
    ("abc\\tdef", "abctdef"),
    ('"abc\\tdef"', "abc\\tdef"),
    ('"abc\\\\tdef"', "abc\\tdef"),
    ("'abc\\tdef'", "abc\\tdef"),
    ("hello\\", "hello"),
    ("hello\\\\", "hello\\"),
    ('"hello', ERROR),
    ('"hello\\"', ERROR),
    ('"hel\'lo"', "hel'lo"),
    ("'hello", ERROR),
    ("'hello\\'", "hello\\"),
    ("'hello\\there'", "hello\\there"),
    ("'hello\\\\there'", "hello\\\\there"),
    ("\"''\"", "''"),
    ("$.", "$."),
    ("he$1x", "hex"),
    ("he$.x", "he$.x"),
    ("he$pwd.", "he."),
    ("he$PWD", "he/home"),
    ("he\\$PWD", "he$PWD"),
    ("he\\\\$PWD", "he\\/home"),
    ('"he\\$PWD"', "he$PWD"),
    ('"he\\\\$PWD"', "he\\/home"),
    ("\\${}", "${}"),
    ("\\${}aaa", "${}aaa"),
    ("he\\${}", "he${}"),
    ("he\\${}xx", "he${}xx"),
    ("${}", ERROR),
    ("${}aaa", ERROR),
    ("he${}", ERROR),
    ("he${}xx", ERROR),
    ("he${hi}", "he"),
    ("he${hi}xx", "hexx"),
    ("he${PWD}", "he/home"),
    ("he${.}", ERROR),
    ("he${XXX:-000}xx", "he000xx"),
    ("he${PWD:-000}xx", "he/homexx"),
    ("he${XXX:-$PWD}xx", "he/homexx"),
    ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
    ("he${XXX:YYY}", ERROR),
    ("he${XXX?}", ERROR),
    ("he${XXX:?}", ERROR),
    ("he${PWD?}", "he/home"),
    ("he${PWD:?}", "he/home"),
    ("he${NULL?}", "he"),
    ("he${NULL:?}", ERROR),
    ("he${XXX:+${PWD}}xx", "hexx"),
    ("he${PWD:+${XXX}}xx", "hexx"),
    ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${XXX:+000}xx", "hexx"),
    ("he${PWD:+000}xx", "he000xx"),
    ("'he${XX}'", "he${XX}"),
    ('"he${PWD}"', "he/home"),
    ("\"he'$PWD'\"", "he'/home'"),
    ('"$PWD"', "/home"),
    ("'$PWD'", "$PWD"),
    ("'\\$PWD'", "\\$PWD"),
    ("'\"hello\"'", '"hello"'),
    ("'he\\$PWD'", "he\\$PWD"),
    ("he${PWD", ERROR),
    ("he${PWD:=000}xx", ERROR),
    ("he${PWD:+${PWD}:}xx", "he/home:xx"),
    ("he${XXX:-\\$PWD:}xx", "he$PWD:xx"),
    # The escaped "$" is literal, so the first "}" closes the substitution.
    ("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"),
    ("안녕하세요", "안녕하세요"),
    ("안'녕'하세요", "안녕하세요"),
    ("안'녕하세요", ERROR),
    ("안녕\\'하세요", "안녕'하세요"),
    ("안녕\\t하세요", "안녕t하세요"),
    ('"안녕\\t하세요"', "안녕\\t하세요"),
    ("$KOREAN", "한국어"),
    ("안녕$KOREAN", "안녕한국어"),
    ("${{aaa}", ERROR),
    ("${aaa}}", "}"),
    ("${aaa", ERROR),
    ("${{aaa", ERROR),
    ("${{aaa}}", ERROR),
    ("${aaa}}}", "}}"),
    ("${aaa}}aaa}", "}aaa}"),
    ("${aaa}:${bbb}", ":"),
    ("$aaa$bbb", ""),
    ("${aaa:-aaa}:${bbb:-bbb}", "aaa:bbb"),
    ("${:}", ERROR),
    ("${:x}", ERROR),
    ("$", "$"),
    ("a$ b", "a$ b"),
    ("${PWD:}", ERROR),
    ("${PWD!}", ERROR),
    ("${PWD:/x/y}", ERROR),
    ("${PWD/}", ERROR),
    ("$$", ""),
    ("$0", ""),
    ("${PWD:-'}'}", "/home"),
    ("${XXX:-'}'}", "}"),
    ("${XXX:-\"a b\"}", "a b"),
    ("${XXX-}x", "x"),
    ("\ufeff$PWD", "/home"),
]


@pytest.mark.parametrize(("word", "expected"), WORD_CASES)
def test_process_word(word: str, expected: object) -> None:
    lexer = Lexer("\\")
    if expected is ERROR:
        with pytest.raises(ExpansionError):
            lexer.process_word(word, ENV)
    else:
        assert lexer.process_word(word, ENV) == expected


# (word, env, expected result, matched names, unmatched names)
MATCH_CASES: list[tuple[str, dict[str, str], str, set[str], set[str]]] = [
    ("x", {"DUMMY": "dummy"}, "x", set(), set()),
    ("x ${UNUSED}", {"DUMMY": "dummy"}, "x ", set(), {"UNUSED"}),
    ("x ${FOO}", {"FOO": "y"}, "x y", {"FOO"}, set()),
    ("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx  ccc",
     {"FOO", "BAR"}, {"BAZ"}),
    ("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", {"FOO": "xxx", "BAR": ""}, "xxx bbb ccc",
     {"FOO", "BAR"}, {"BAZ"}),
    ("${FOO:-}", {"FOO": "xxx"}, "xxx", {"FOO"}, set()),
    ("${FOO:-}", {}, "", set(), {"FOO"}),
    ("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa bbb ",
     {"FOO", "BAR"}, {"BAZ"}),
    ("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", {"FOO": "xxx", "BAR": ""}, "aaa  ",
     {"FOO", "BAR"}, {"BAZ"}),
    ("${FOO?aaa}", {"FOO": "xxx"}, "xxx", {"FOO"}, set()),
    ("${BAR?bbb}", {"BAR": ""}, "", {"BAR"}, set()),
    ("${FOO:?aaa}", {"FOO": "xxx"}, "xxx", {"FOO"}, set()),
    # Regex metacharacters are literal; "\}" keeps the brace out of the ${} syntax.
    ("${FOO#()[]{\\}^$.\\*\\?|\\\\}", {"FOO": "()[]{}^$.*?|\\x"}, "x", {"FOO"}, set()),
    ("${FOO%%\\**}", {"FOO": "xx**"}, "xx", {"FOO"}, set()),
    ("${FOO#*x*y}", {"FOO": "xxyy"}, "y", {"FOO"}, set()),
    ("${FOO#*}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": "x"}, "xyy", {"FOO", "BAR"}, set()),
    ("${FOO#$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy", {"FOO", "BAR"}, set()),
    ("${FOO#}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    ("${FOO##*x}", {"FOO": "xxyy"}, "yy", {"FOO"}, set()),
    ("${FOO##}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    ("${FOO#?\\?}", {"FOO": "???y"}, "?y", {"FOO"}, set()),
    ("${ABC:-.}${FOO%x}${ABC:-.}", {"FOO": "xxyy"}, ".xxyy.", {"FOO"}, {"ABC"}),
    ("${FOO%%\\**\\*}", {"FOO": "a***yy*"}, "a", {"FOO"}, set()),
    ("${FOO%}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    ("${FOO%%$BAR}", {"FOO": "xxyy", "BAR": ""}, "xxyy", {"FOO", "BAR"}, set()),
    ("${FOO%y*}", {"FOO": "a.y.y"}, "a.y.", {"FOO"}, set()),
    ("${FOO%%y*}", {"FOO": "a.y.y"}, "a.", {"FOO"}, set()),
    ("${FOO#*.}", {"FOO": "a.b.c"}, "b.c", {"FOO"}, set()),
    ("${FOO##*.}", {"FOO": "a.b.c"}, "c", {"FOO"}, set()),
    ("${FOO%.*}", {"FOO": "a.b.c"}, "a.b", {"FOO"}, set()),
    ("${FOO%%.*}", {"FOO": "a.b.c"}, "a", {"FOO"}, set()),
    ("${NOPE#x}", {}, "", set(), {"NOPE"}),
    ("${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", {"FOO": "/foo*/*/*.txt", "NEEDLE": "\\*/"},
     "/foo.*/*.txt - /foo..*.txt", {"FOO", "NEEDLE"}, set()),
    ("${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", {"FOO": "/tmp/tmp/bar.txt", "NEEDLE": "/tmp"},
     "/tmp/bar.txt - /bar.txt", {"FOO", "NEEDLE"}, set()),
    ("${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
     {"FOO": "/a/foo/b/c.txt", "NEEDLE": "/?/", "REPLACEMENT": "/"},
     "/foo/b/c.txt - /foo/c.txt", {"FOO", "NEEDLE", "REPLACEMENT"}, set()),
    ("${FOO/$NEEDLE/$REPLACEMENT}",
     {"FOO": "http://google.de", "NEEDLE": "http://", "REPLACEMENT": "https://"},
     "https://google.de", {"FOO", "NEEDLE", "REPLACEMENT"}, set()),
    ("${FOO//\\//\\/}", {"FOO": "/tmp/foo.txt"}, "\\/tmp\\/foo.txt", {"FOO"}, set()),
    ("${FOO/$BAR/ww}", {"FOO": "xxyy", "BAR": ""}, "wwxxyy", {"FOO", "BAR"}, set()),
    ("${FOO///}", {"FOO": "xxyy"}, "xxyy", {"FOO"}, set()),
    ("${FOO///}", {}, "", set(), {"FOO"}),
    # Go's ReplaceAll: an empty match right after a match is not replaced again.
    ("${FOO//*/r}", {"FOO": "ab"}, "r", {"FOO"}, set()),
    ("${FOO//$E/-}", {"FOO": "ab", "E": ""}, "-a-b-", {"FOO", "E"}, set()),
    # Go's Expand on the replacement of //: "$$" is "$", "$name" is empty.
    ("${FOO//a/$R}", {"FOO": "xa", "R": "$$-$1-${x}-$"}, "x$---$", {"FOO", "R"}, set()),
    ("${FOO/a/$R}", {"FOO": "xa", "R": "$1"}, "x$1", {"FOO", "R"}, set()),
    ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tgz",
     {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "arm", "TARGETVARIANT": "v7"},
     "something-v1.2.3.linux-arm-v7.tgz",
     {"VERSION", "TARGETOS", "TARGETARCH", "TARGETVARIANT"}, set()),
    ("something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tgz",
     {"VERSION": "v1.2.3", "TARGETOS": "linux", "TARGETARCH": "amd64"},
     "something-v1.2.3.linux-amd64.tgz",
     {"VERSION", "TARGETOS", "TARGETARCH"}, {"TARGETVARIANT"}),
    ("$$ $@", {}, " ", set(), {"$", "@"}),
]


@pytest.mark.parametrize(("word", "env", "expected", "matched", "unmatched"), MATCH_CASES)
def test_matches(
    word: str, env: dict[str, str], expected: str, matched: set[str], unmatched: set[str]
) -> None:
    lexer = Lexer()
    result, found = lexer.process_word_with_matches(word, env)
    assert result == expected
    assert found == matched
    assert lexer.process_word_with_unmatched(word, env) == (expected, unmatched)
    expansion = lexer.expand(word, env)
    assert expansion.result == expected
    assert set(expansion.matched) == matched
    assert set(expansion.unmatched) == unmatched


@pytest.mark.parametrize(
    ("word", "env", "message"),
    [
        ("${BAZ?ccc}", {}, 'failed to process "${BAZ?ccc}": BAZ: ccc'),
        ("${BAR:?bbb}", {"BAR": ""}, "BAR: bbb"),
        ("${BAZ:?}", {}, "BAZ: is not allowed to be unset"),
        ("${BAR:?}", {"BAR": ""}, "BAR: is not allowed to be empty"),
        ("${BAR?}", {}, "BAR: is not allowed to be unset"),
        ("${VAR:?message here$ARG}", {"VAR": "", "ARG": "x"}, "VAR: message herex"),
        ("${FOO=aaa}", {"FOO": "x"}, "unsupported modifier (=) in substitution"),
        ("${FOO:x}", {"FOO": "x"}, "unsupported modifier (:x) in substitution"),
        ("${FOO", {}, "unsupported modifier (\ufffd) in substitution"),
        ("${FOO//ww}", {"FOO": "x"}, "syntax error: missing '/' in ${}"),
        ("${FOO/a/b", {"FOO": "x"}, "syntax error: missing '}'"),
        ("${FOO:-x", {}, "syntax error: missing '}'"),
        ("${", {}, "syntax error: missing '}'"),
        ("${}", {}, "syntax error: bad substitution"),
        ("'abc", {}, "unexpected end of statement while looking for matching single-quote"),
        ('"abc', {}, "unexpected end of statement while looking for matching double-quote"),
        ("${FOO#\\x}", {"FOO": "x"}, "invalid pattern (\\x) in substitution: invalid escape '\\x'"),
        ("${FOO#a\\}", {"FOO": "x"}, "syntax error: missing '}'"),
        ('a\n"b', {}, 'failed to process "a\\n\\"b": unexpected end of statement'),
    ],
)
def test_error_messages(word: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ExpansionError) as info:
        Lexer().process_word(word, env)
    assert message in str(info.value)
    assert info.value.location is None


def test_unguarded_unmatched() -> None:
    expansion = Lexer().expand("$A ${B} ${C:-x} ${D+y} ${E?z} ${F#p} ${G/a/b} ${C}", {"E": "1"})
    assert expansion.unmatched == {"A", "B", "C", "D", "F", "G"}
    assert expansion.unguarded_unmatched == {"A", "B", "C", "F", "G"}


def test_mandatory_var_with_value() -> None:
    lexer = Lexer()
    assert lexer.process_word("${VAR:?message}", {"VAR": "plain"}) == "plain"
    assert lexer.process_word("${VAR?message}", {"VAR": ""}) == ""


# ProcessWords: (env additions in order, word, expected words or ERROR)
WORDS_ENV = {
    "hi": "hi",
    "space": "abc  def",
    "leading": "  ab c",
    "trailing": "ab c   ",
}
WORDS_CASES: list[tuple[str, object]] = [
    ("hello", ["hello"]),
    ("hello${nothere}bye", ["hellobye"]),
    ("hello${hi}bye", ["hellohibye"]),
    ("hello${space}bye", ["helloabc", "defbye"]),
    ('hello"${space}"bye', ["helloabc  defbye"]),
    ('hello "${space}"bye', ["hello", "abc  defbye"]),
    ("hello${leading}def", ["hello", "ab", "cdef"]),
    ('hello"${leading}" def', ["hello  ab c", "def"]),
    ('hello"${leading}"', ["hello  ab c"]),
    ("hello${leading}", ["hello", "ab", "c"]),
    ("hello${trailing}", ["helloab", "c"]),
    ("hello${trailing}d", ["helloab", "c", "d"]),
    ('hello"${trailing}"d', ["helloab c   d"]),
    ('hel"lo${trailing}"', ["helloab c   "]),
    ('hello" there  "', ["hello there  "]),
    ("hello there     ", ["hello", "there"]),
    ("hello\\ there", ["hello there"]),
    ('hello" there', ERROR),
    ('hello\\" there', ['hello"', "there"]),
    ('hello"\\\\there"', ["hello\\there"]),
    ('hello"\\there"', ["hello\\there"]),
    ("hello'\\\\there'", ["hello\\\\there"]),
    ("hello'\\there'", ["hello\\there"]),
    ("hello'$there'", ["hello$there"]),
    ("", []),
    ("   ", []),
    ("''", []),
    ("a '' b", ["a", "b"]),
    ("a\tb\nc", ["a", "b", "c"]),
    ("${space:-x y}", ["abc", "def"]),
    ("${none:-x y}", ["x", "y"]),
    ("${none:-'x y'}", ["x", "y"]),
    ("'${space}'", ["${space}"]),
]


@pytest.mark.parametrize(("word", "expected"), WORDS_CASES)
def test_process_words(word: str, expected: object) -> None:
    lexer = Lexer()
    if expected is ERROR:
        with pytest.raises(ExpansionError):
            lexer.process_words(word, WORDS_ENV)
    else:
        assert lexer.process_words(word, WORDS_ENV) == expected


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("he`$PWD", "he$PWD"),
        ("he\\$PWD", "he\\/home"),
        ("c:\\windows\\$SHELL", "c:\\windows\\bash"),
        ('"a`"b"', 'a"b'),
        ('"a\\"', "a\\"),
        ("a``b", "a`b"),
        ("x`", "x"),
    ],
)
def test_backtick_escape(word: str, expected: str) -> None:
    assert Lexer("`").process_word(word, ENV) == expected


def test_backtick_escape_splits() -> None:
    assert Lexer("`").process_words("a` b c\\ d", {}) == ["a b", "c\\", "d"]


def test_raw_modes() -> None:
    env = {"A": "1"}
    assert Lexer(raw_quotes=True).process_word("'a'\"$A\"", env) == "'a'\"1\""
    assert Lexer(raw_escapes=True).process_word("a\\ b", env) == "a\\ b"
    assert Lexer(skip_process_quotes=True).process_word("'$A' \"x\"", env) == "'1' \"x\""
    assert Lexer(skip_unset_env=True).process_word("$A $B ${C} ${D:-x}", env) == "1 $B ${C} ${D:-x}"


def test_bad_escape_argument() -> None:
    with pytest.raises(ValueError):
        Lexer("ab")


def test_deep_nesting_is_an_expansion_error() -> None:
    word = "${A:-" * 5000 + "x" + "}" * 5000
    with pytest.raises(ExpansionError):
        Lexer().process_word(word, {})


def test_go_quote() -> None:
    assert go_quote('a"b\\c\n\t\x01é\x7f') == '"a\\"b\\\\c\\n\\t\\x01é\\x7f"'


_ALPHABET = st.sampled_from(
    [*"$ {}:-+?#%/'\"\\`abAB_09*.\t\n", "é", "\ufeff", "$A", "${A"]
)


@settings(max_examples=400, deadline=None)
@given(word=st.lists(_ALPHABET, max_size=40).map("".join), escape=st.sampled_from(["\\", "`"]))
def test_random_words_only_raise_expansion_error(word: str, escape: str) -> None:
    lexer = Lexer(escape)
    env = {"A": "a b*", "B": "", "_": "\\*/"}
    try:
        result = lexer.process_word(word, env)
    except ExpansionError:
        with pytest.raises(ExpansionError):
            lexer.process_words(word, env)
        return
    words = lexer.process_words(word, env)
    assert isinstance(result, str)
    assert all(w for w in words)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30))
def test_arbitrary_text_only_raises_expansion_error(text: str) -> None:
    with contextlib.suppress(ExpansionError):
        Lexer().process_words(text, {"X": "1"})


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_characters="$'\"\\\ufeff"), max_size=30))
def test_plain_text_is_unchanged(text: str) -> None:
    assert Lexer().process_word(text, {}) == text
