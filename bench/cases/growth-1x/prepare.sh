#!/bin/sh
# bigctx's context at 1x its files and bytes: 5000 small files in 50 dirs, 3 x 50 MiB
# (the shared bigctx case's gen.py, beside this case in the runner's copy of the cases)
exec python3 "$(dirname "$0")/../bigctx/gen.py" . --small 5000 --dirs 50 --big 3
