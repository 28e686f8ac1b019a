#!/bin/sh
# one-file change: rewrite app/main.sh (the RUN stays cached, the COPY reruns)
printf '#!/bin/sh\necho "changed %s"\n' "$1" > app/main.sh
