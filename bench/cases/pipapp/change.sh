#!/bin/sh
# one-file change: rewrite app/views.py (the pip layer stays cached; COPY app/ and its RUN rerun)
cat > app/views.py <<PY
import benchpkg00.mod00
import benchpkg20.mod10


def render() -> str:
    return f"pipapp: {benchpkg00.mod00.main()} {benchpkg20.mod10.main()} rev $1"
PY
