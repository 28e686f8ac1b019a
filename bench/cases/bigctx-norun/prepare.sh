#!/bin/sh
# the shared bigctx case's files: small/ (5,000 files) and big/ (3 x 50 MiB)
exec python3 "${PEERS_CASES:-/work/shared/peers/cases}/bigctx/gen.py" .
