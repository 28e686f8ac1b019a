"""Names that look like they hold a secret: BuildKit's ``SecretsUsedInArgOrEnv`` word list.

A name looks secret when one of its ``_``-separated words (any case) is ``apikey``, ``auth``,
``credential(s)``, ``key``, ``password``, ``pword``, ``passwd``, ``secret`` or ``token``, and
none is ``public``, ``file`` or ``version`` (BuildKit's ``getSecretsRegex``:
``(?i)(?:_|^)(?:apikey|auth|...)(?:_|$)`` minus the allow list). ``NPM_TOKEN``, ``API_KEY``,
``db_password`` look secret; ``PUBLIC_KEY``, ``TOKEN_FILE``, ``MONKEY`` do not.

Used by ``dockyard check`` (the rule itself) and by the build, which never prints the value
of such a build arg or variable (a miss reason names it and says it changed).
"""

from __future__ import annotations

_SECRET_WORDS = frozenset({
    "apikey", "auth", "credential", "credentials", "key", "password", "pword", "passwd",
    "secret", "token",
})
_ALLOW_WORDS = frozenset({"public", "file", "version"})


def looks_secret(name: str) -> bool:
    """Whether a build arg or environment variable named ``name`` probably holds a secret."""
    words = {word.casefold() for word in name.split("_")}  # as Go's (?i) folds
    return bool(words & _SECRET_WORDS) and not words & _ALLOW_WORDS
