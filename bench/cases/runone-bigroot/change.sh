#!/bin/sh
# one-file change: rewrite stamp.txt (the COPY and the one-file RUN rerun)
printf 'changed %s\n' "$1" > stamp.txt
