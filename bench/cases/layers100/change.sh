#!/bin/sh
# one-file change: rewrite stamp.txt (RUN 1-50 stay cached; the COPY and RUN 51-99 rerun)
printf 'changed %s\n' "$1" > stamp.txt
