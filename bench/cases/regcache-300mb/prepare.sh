#!/bin/sh
# run in a copy of context/: five 60 MB files of random (incompressible) bytes
set -e
for i in 1 2 3 4 5; do head -c 60000000 /dev/urandom > "l$i.bin"; done
