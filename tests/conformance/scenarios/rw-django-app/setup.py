"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"requirements.txt": "Django==5.0\ngunicorn==21.2\n", "manage.py": "#!/usr/bin/env python\n", "site/__init__.py": "",
       "site/settings.py": "DEBUG=False\n", "site/wsgi.py": "application=None\n", "static/css/site.css": "body{}\n",
       ".dockerignore": "*.sqlite3\n.venv\n", "db.sqlite3": "db", ".venv/bin/python": "x"})
