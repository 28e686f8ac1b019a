/* linkcount: count the links (<a href=...>) in HTML read from files or stdin.
 *
 *   linkcount [-l] [FILE...]
 *
 * Prints "N links" (with the file name when there are several files); -l also lists
 * every href, one per line. Comments (<!-- ... -->) are skipped; tag and attribute names
 * are matched without regard to case, values may be quoted with ' or " or bare.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXVAL 4096

static int list_links;

static int next(FILE *in) { return getc(in); }

/* Skip a comment; called after "<!--" was read. */
static void skip_comment(FILE *in) {
    int dashes = 0, c;
    while ((c = next(in)) != EOF) {
        if (c == '>' && dashes >= 2) return;
        dashes = (c == '-') ? dashes + 1 : 0;
    }
}

/* Read an attribute value after '='; stores at most MAXVAL-1 bytes in val.
 * Returns the first character after the value. */
static int read_value(FILE *in, char *val) {
    int c, quote = 0;
    size_t n = 0;
    while ((c = next(in)) != EOF && isspace(c)) {}
    if (c == '"' || c == '\'') { quote = c; c = next(in); }
    while (c != EOF) {
        if (quote ? c == quote : (isspace(c) || c == '>')) break;
        if (n + 1 < MAXVAL) val[n++] = (char)c;
        c = next(in);
    }
    val[n] = '\0';
    return quote && c == quote ? next(in) : c;
}

/* Parse the rest of an <a ...> tag; returns 1 when it has an href. */
static int read_anchor(FILE *in, char *href) {
    char name[16];
    char val[MAXVAL];
    int c = next(in), found = 0;
    for (;;) {
        size_t n = 0;
        while (c != EOF && isspace(c)) c = next(in);
        if (c == EOF || c == '>') return found;
        while (c != EOF && !isspace(c) && c != '=' && c != '>') {
            if (n + 1 < sizeof name) name[n++] = (char)tolower(c);
            c = next(in);
        }
        name[n] = '\0';
        while (c != EOF && isspace(c)) c = next(in);
        if (c != '=') continue;            /* an attribute without a value */
        c = read_value(in, val);
        if (!found && strcmp(name, "href") == 0) {
            memcpy(href, val, strlen(val) + 1);
            found = 1;
        }
    }
}

static long count_links(FILE *in) {
    long links = 0;
    int c;
    char href[MAXVAL];
    while ((c = next(in)) != EOF) {
        if (c != '<') continue;
        c = next(in);
        if (c == '!') {
            int d1 = next(in), d2 = d1 == '-' ? next(in) : EOF;
            if (d1 == '-' && d2 == '-') skip_comment(in);
            continue;
        }
        if (tolower(c) != 'a') continue;
        c = next(in);
        if (c == '>') continue;            /* <a> without attributes */
        if (!isspace(c)) continue;         /* <abbr>, <area> ... */
        ungetc(c, in);
        if (read_anchor(in, href)) {
            links++;
            if (list_links) printf("%s\n", href);
        }
    }
    return links;
}

int main(int argc, char **argv) {
    int first = 1, status = 0;
    if (argc > 1 && strcmp(argv[1], "-l") == 0) { list_links = 1; first = 2; }
    if (first >= argc) {
        long n = count_links(stdin);
        printf("%ld link%s\n", n, n == 1 ? "" : "s");
        return 0;
    }
    for (int i = first; i < argc; i++) {
        FILE *in = strcmp(argv[i], "-") == 0 ? stdin : fopen(argv[i], "r");
        if (in == NULL) { perror(argv[i]); status = 1; continue; }
        long n = count_links(in);
        if (argc - first > 1) printf("%s: ", argv[i]);
        printf("%ld link%s\n", n, n == 1 ? "" : "s");
        if (in != stdin) fclose(in);
    }
    return status;
}
