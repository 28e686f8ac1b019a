#!/bin/sh
# bigctx's context at 4x its files and bytes: 20000 small files in 200 dirs, 12 x 50 MiB
# (the shared bigctx case's gen.py, beside this case in the runner's copy of the cases)
exec python3 "$(dirname "$0")/../bigctx/gen.py" . --small 20000 --dirs 200 --big 12
