#!/bin/sh
# generate node_modules/ (90,000 files) and src/ (10,000 files) into the current directory
exec python3 "$(dirname "$0")/gen.py" .
