#!/bin/sh
# one-file change: rewrite one file of the app (src/), outside node_modules
printf 'module.exports = "changed %s";\n' "$1" > src/components/c007/f00007.js
