"""Dockerfiles used by the parser's differential and golden tests (hostile and odd included)."""

from __future__ import annotations

CORPUS: dict[str, str] = {
    "simple": "FROM busybox\nRUN echo hi\n",
    "all_instructions": (
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=alpine\n"
        "FROM --platform=$BUILDPLATFORM ${BASE}:3.19 AS build\n"
        "LABEL org.opencontainers.image.title=\"demo app\" version=1\n"
        "MAINTAINER Jane <jane@example.com>\n"
        "ENV PATH=/opt/bin:$PATH HOME=/root\n"
        "ENV LEGACY some value here\n"
        "ADD --chown=1:1 --chmod=644 https://example.com/a.tgz /tmp/\n"
        "COPY --from=build --link /src /dst\n"
        "RUN --mount=type=cache,target=/root/.cache --network=none make\n"
        "EXPOSE 80/tcp 443\n"
        "VOLUME /data /logs\n"
        "USER 1000:1000\n"
        "WORKDIR /app\n"
        "ONBUILD RUN echo child\n"
        "STOPSIGNAL SIGTERM\n"
        "HEALTHCHECK --interval=30s --timeout=3s CMD curl -f http://localhost/ || exit 1\n"
        "SHELL [\"/bin/bash\", \"-c\"]\n"
        "CMD [\"serve\", \"--port\", \"80\"]\n"
        "ENTRYPOINT exec /entry.sh\n"
    ),
    "lowercase_mixed": "from busybox\nrUn echo hi\nCmd [\"a\"]\n",
    "continuation": "FROM a\nRUN apt-get update \\\n    && apt-get install -y \\\n       curl\n",
    "continuation_comments": "FROM a\nRUN echo a \\\n# comment inside\n  # indented comment\n    b\n",
    "empty_continuation": "FROM a\nRUN echo a \\\n\n   \n  b\nRUN c\n",
    "continuation_eof": "FROM a\nRUN echo \\",
    "escaped_escape": "FROM a\nRUN echo a\\\\\nRUN b\n",
    "lone_escape_line": "FROM a\n\\\nRUN b\n",
    "backtick_escape": "# escape=`\nFROM windows\nRUN dir `\n  c:\\ `\n  /s\nENV P=c:\\tools\n",
    "backtick_upper": "# ESCAPE = `\nFROM a\nRUN x `\n y\n",
    "escape_after_instruction": "FROM a\n# escape=`\nRUN x `\n y\n",
    "escape_after_blank": "\n# escape=`\nFROM a `\n b\n",
    "escape_after_comment": "# hello\n# escape=`\nFROM a `\n b\n",
    "directive_unknown_first": "# foo=bar\n# escape=`\nFROM a `\n b\n",
    "directives_all": "# syntax=docker/dockerfile:1.7\n# check=skip=all\n# escape=\\\nFROM a\n",
    "directive_spaces": "  #   escape   =   `  \nFROM a `\n b\n",
    "shebang": "#!/usr/bin/env buildctl\n# escape=`\nFROM a `\n b\n",
    "bom": "\ufeffFROM busybox\nRUN true\n",
    "bom_directive": "\ufeff# escape=`\nFROM a `\n b\n",
    "crlf": "FROM a\r\nRUN echo a \\\r\n  b\r\nENV X=1\r\n",
    "cr_only": "FROM a\rRUN b\r\n",
    "tabs_and_spaces": "\t FROM \t a  \t\nRUN\t\techo   spaced\t\n",
    "vertical_tab_formfeed": "FROM\va\fb\nRUN x\v\n",
    "unicode": "FROM alpine\nLABEL description=\"caf\u00e9 \u2615 \u65e5\u672c\"\nRUN echo \u00e9\u00e8 \U0001F600\nENV \u00e9t\u00e9=\u00e9t\u00e9\n",
    "unicode_spaces": "FROM a\nRUN echo\u00a0b\u2003c\nENV a=b\u00a0c=d\nLABEL x\u3000y\n",
    "unicode_flag": "FROM a\nCOPY --chown=\u00e9l\u00e8ve src dst\n",
    "control_chars": "FROM a\nRUN echo \x01\x7f\x1b[31m\nLABEL a=\"\x1f\"\n",
    "json_forms": "FROM a\nCMD [\"a\", \"b c\"]\nENTRYPOINT [ \"x\" ]\nRUN [\"sh\",\"-c\",\"echo\"]\n",
    "json_invalid_fallback": "FROM a\nCMD [\"a\", 'b']\nRUN [not json\nENTRYPOINT [\"a\",]\nCMD {\"a\": 1}\n",
    "json_trailing": "FROM a\nCMD [\"a\"] trailing words\n",
    "json_empty": "FROM a\nCMD []\nENTRYPOINT [ ]\n",
    "json_escapes": "FROM a\nCMD [\"tab\\there\", \"\\u00e9\", \"quote\\\"\", \"slash\\/\", \"\\ud83d\\ude00\"]\n",
    "json_lone_surrogate": "FROM a\nCMD [\"\\ud800\"]\n",
    "json_nan": "FROM a\nCMD [NaN]\n",
    "json_huge_number": "FROM a\nCMD [1e999]\n",
    "json_control_in_string": "FROM a\nCMD [\"a\tb\"]\n",
    "json_non_string": "FROM a\nCMD [\"a\", 1]\n",
    "json_null": "FROM a\nRUN [null]\n",
    "json_nested": "FROM a\nCOPY [[\"a\"], \"b\"]\n",
    "json_copy_volume": "FROM a\nCOPY [\"a b\", \"/c d/\"]\nVOLUME [\"/v1\", \"/v2\"]\nADD [\"x\", \"y\"]\n",
    "env_forms": "FROM a\nENV A=1 B=\"two words\" C='single' D=e\\ f\nENV K V with spaces\nENV E=\nENV F=\"\"\n",
    "env_no_value": "FROM a\nENV onlykey\n",
    "env_missing_equals": "FROM a\nENV a=1 b\n",
    "env_empty": "FROM a\nENV\n",
    "label_forms": "FROM a\nLABEL a=b \"quoted key\"=v\nLABEL legacy value\n",
    "arg_forms": "ARG A\nARG B=1 C D=\"x y\"\nFROM a\nARG\nARG =x\n",
    "from_forms": "FROM a\nFROM b AS c\nFROM --platform=linux/arm64 d as E\nFROM\nFROM a b c d\n",
    "flags_odd": (
        "FROM a\nCOPY --from=\"build stage\" --chown='1 2' a b\nCOPY -- --notflag b\n"
        "RUN --mount type=bind echo\nRUN --a=\\\"x\\\" --b echo\nCOPY --link=false a b\n"
        "RUN --flag-at-end\nCOPY --from=a --\n"
    ),
    "unknown_instruction": "FROM a\nFORM b\nBOGUS\nRUNN x y\n",
    "onbuild": (
        "FROM a\nONBUILD ADD . /app\nONBUILD RUN [\"make\"]\nONBUILD COPY --from=x a b\n"
        "ONBUILD ONBUILD RUN x\nONBUILD\nONBUILD ENV a=b\n"
    ),
    "onbuild_env_error": "FROM a\nONBUILD ENV a\n",
    "healthcheck": (
        "FROM a\nHEALTHCHECK NONE\nHEALTHCHECK CMD [\"curl\", \"-f\", \"x\"]\n"
        "HEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD curl -f http://x/\n"
        "HEALTHCHECK\nHEALTHCHECK CONNECT TCP 7000\nHEALTHCHECK CMD\n"
    ),
    "heredoc_basic": "FROM a\nRUN <<EOF\necho hi\necho there\nEOF\nRUN after\n",
    "heredoc_chomp": "FROM a\nRUN <<-EOF\n\techo tabbed\n\t\tdeeper\n\tEOF\n",
    "heredoc_quoted": "FROM a\nRUN <<'EOF'\necho $HOME\nEOF\nRUN <<\"EOT\"\necho $HOME\nEOT\n",
    "heredoc_multiple": "FROM a\nRUN <<A cat - <<B\nfirst\nA\nsecond\nB\n",
    "heredoc_copy": "FROM a\nCOPY <<EOF /etc/motd\nhello\nEOF\nCOPY --chmod=755 <<-\"SCRIPT\" <<X /bin/\n\t#!/bin/sh\n\tSCRIPT\nx\nX\n",
    "heredoc_fd": "FROM a\nRUN 3<<EOF cat /dev/fd/3\nthree\nEOF\n",
    "heredoc_crlf": "FROM a\r\nRUN <<EOF\r\necho a\r\nEOF\r\n",
    "heredoc_unterminated": "FROM a\nRUN <<EOF\necho never ends\n",
    "heredoc_not_in_cmd": "FROM a\nCMD <<EOF\nEOF\n",
    "heredoc_json_run": "FROM a\nRUN [\"cat\", \"<<EOF\"]\nEOF\n",
    "heredoc_onbuild": "FROM a\nONBUILD RUN <<EOF\nhello\nEOF\n",
    "heredoc_in_quotes": "FROM a\nRUN echo '<<EOF'\nRUN echo \"x\" <<E\"O\"F\nbody\nEOF\n",
    "heredoc_unbalanced_quote": "FROM a\nRUN <<EOF echo \"oops\nnot a heredoc\n",
    "heredoc_dollar": "FROM a\nRUN <<$EOF\nbody\n$EOF\n",
    "heredoc_empty_name": "FROM a\nRUN << EOF\nEOF\n",
    "heredoc_eof_no_newline": "FROM a\nRUN <<EOF\nbody\nEOF",
    "heredoc_continuation": "FROM a\nRUN <<EOF \\\n  cat\nbody\nEOF\n",
    "comments_everywhere": "# top comment\n\n   # indented\nFROM a # not a comment\n#RUN skipped\nRUN b\n",
    "empty_file": "",
    "only_comments": "# just\n# comments\n",
    "only_whitespace": "  \n\t\n\n",
    "whitespace_continuation": "\\\n   \n",
    "workdir_user_spaces": "FROM a\nWORKDIR /path with spaces\nUSER  root  \nSTOPSIGNAL  9\nMAINTAINER a b c\n",
    "expose_volume_plain": "FROM a\nEXPOSE 80 443/udp 8000-8010\nVOLUME /a  /b\tc\n",
    "shell_forms": "FROM a\nSHELL [\"powershell\", \"-command\"]\nSHELL /bin/sh -c\n",
    "many_stages": "FROM a AS one\nFROM one AS two\nFROM two\nCOPY --from=one /x /y\n",
    "quotes_in_run": "FROM a\nRUN echo \"a  b\" 'c  d' \\\"e\\\"\n",
    "trailing_spaces_after_escape": "FROM a\nRUN echo a \\   \n  b\nRUN c \\\t\n d\n",
    "duplicate_escape_directive": "# escape=\\\n# escape=`\nFROM a\n",
    "invalid_escape_directive": "# escape=x\nFROM a\n",
    "long_line_ok": "FROM a\nRUN echo " + "x" * 60000 + "\n",
    "long_line_too_long": "FROM a\nRUN echo " + "x" * 70000 + "\n",
}
