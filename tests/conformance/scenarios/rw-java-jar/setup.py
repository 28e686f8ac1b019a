"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"pom.xml": "<project/>\n", "src/main/resources/application.properties": "server.port=8080\n",
       "src/main/resources/static/index.html": "<html/>\n", "src/main/java/hello/Application.java": "class Application {}\n"})
