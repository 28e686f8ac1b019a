#!/bin/sh
# the files100k tree (node_modules/ 90,000 files, src/ 10,000), with node_modules ignored
exec python3 "$(dirname "$0")/../files100k/gen.py" .
