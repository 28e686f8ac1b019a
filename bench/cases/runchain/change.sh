#!/bin/sh
# one-file change: rewrite stamp.txt (RUN 1-10 stay cached; the COPY and RUN 11-20 rerun)
printf 'changed %s\n' "$1" > stamp.txt
