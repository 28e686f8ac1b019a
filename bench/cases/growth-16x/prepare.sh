#!/bin/sh
# bigctx's context at 16x its files and bytes: 80000 small files in 800 dirs, 48 x 50 MiB
# (the shared bigctx case's gen.py, beside this case in the runner's copy of the cases)
exec python3 "$(dirname "$0")/../bigctx/gen.py" . --small 80000 --dirs 800 --big 48
