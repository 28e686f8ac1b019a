"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"requirements.txt": "flask==3.0.0\nrequests==2.31.0\n", "app/__init__.py": "", "app/__main__.py": "print('hi')\n",
       "app/__pycache__/x.cpython-311.pyc": "pyc", ".dockerignore": "**/__pycache__\n*.pyc\n"})
