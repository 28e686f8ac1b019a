"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"package.json": '{"name":"app","version":"1.0.0"}\n', "package-lock.json": "{}\n",
       "server.js": "console.log('hi')\n", "lib/util.js": "module.exports={}\n",
       "node_modules/dev-only/x.js": "x", "npm-debug.log": "log", ".env": "SECRET=1",
       ".dockerignore": "node_modules\nnpm-debug.log\n.env\n.git\n"})
