#!/bin/sh
# generate wheels/ (40 pure-Python wheels) and requirements.txt into the current directory
exec python3 "$(dirname "$0")/gen_wheels.py" .
