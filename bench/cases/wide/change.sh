#!/bin/sh
# one-file change: rewrite b.txt (stage b and the final stage from its COPY --from=b rerun)
printf 'changed %s\n' "$1" > b.txt
