# SPDX-License-Identifier: MIT
# scripts/doxygen-filter.awk — Doxygen's INPUT_FILTER for ctxvar's headers.
#
# The headers document every declaration in ordinary C comments, written to
# be read in the header itself.  This filter lets Doxygen read the same
# comments, so there is one text and no markup in the headers:
#   - the file's first comment (after the SPDX license line, which stays a
#     plain comment) becomes its @file documentation;
#   - a comment that opens a line becomes a documentation block (`/**`) for
#     what follows it; when several declarations at file scope follow it
#     before a blank line (`typedef struct a a_t; typedef struct b b_t;`, two
#     functions one comment explains), each of them gets the comment;
#   - a comment after code on the same line documents that code (`/**<`),
#     e.g. a struct member or an enum value;
#   - section banners (`/* ---- ... */`, `/* ==== ... */`), the one-line
#     titles between them, and comments after `}` or a preprocessor
#     conditional stay plain comments;
#   - inside documentation, the characters Doxygen would take as its own
#     markup (`\`, `@`, `<`, `>`, `%`, `#`) are escaped, so that
#     `<nats/nats.h>` or `"%00"` read as written.
# Code is passed through unchanged, and every line stays on its line.
# Text between double quotes or backticks is taken literally by Doxygen and
# is left alone; elsewhere its markup characters are escaped.
function escape(text,    out, i, c, quote) {
    out = ""
    quote = ""
    for (i = 1; i <= length(text); i++) {
        c = substr(text, i, 1)
        if (quote != "") {
            if (c == quote)
                quote = ""
        } else if (c == "\"" || c == "`") {
            quote = c
        } else if (index("\\@<>%#", c) > 0) {
            c = "\\" c
        }
        out = out c
    }
    return out
}
function banner(line) {
    return line ~ /^[[:space:]]*\/\*[[:space:]]*(-|=)(-|=)(-|=)/
}
function conditional_or_close(before) {
    return before ~ /^[[:space:]]*}/ ||
           before ~ /^[[:space:]]*#[[:space:]]*(if|ifdef|ifndef|else|elif|endif|include)/
}
# The comment text `rest` (after the opening `/*`), escaped; sets in_doc
# when the comment goes on past this line.
function body(rest,    end) {
    end = index(rest, "*/")
    if (end > 0) {
        in_doc = 0
        return escape(substr(rest, 1, end - 1)) "*/" substr(rest, end + 2)
    }
    in_doc = 1
    return escape(rest)
}
# The text of the comment on lines b..e (without the comment marks and the
# leading asterisks), on one line, escaped.
function comment_text(b, e,    k, text, all) {
    all = ""
    for (k = b; k <= e; k++) {
        text = lines[k]
        if (k == b)
            sub(/^.*\/\*/, "", text)
        if (k == e)
            sub(/\*\/.*$/, "", text)
        sub(/^[[:space:]]*\*[[:space:]]?/, "", text)
        gsub(/^[[:space:]]+|[[:space:]]+$/, "", text)
        if (text != "")
            all = all (all == "" ? "" : " ") text
    }
    return escape(all)
}
# After a leading comment on lines b..e: if more declarations than one follow
# it before a blank line (and none opens a brace), each one after the first
# gets the same text as a trailing comment.
function share_comment(b, e,    k, text, ends, count) {
    count = 0
    for (k = e + 1; k <= n; k++) {
        text = lines[k]
        if (text ~ /^[[:space:]]*$/ || text ~ /^[[:space:]]*\/\*/ || text ~ /^[[:space:]]*}/ ||
            text ~ /^[[:space:]]*#[[:space:]]*(if|ifdef|ifndef|else|elif|endif)/)
            break
        if (index(text, "{") > 0)
            return
        sub(/\/\*.*/, "", text)
        if ((text ~ /^[[:space:]]*#[[:space:]]*define/ && text !~ /\\[[:space:]]*$/) ||
            text ~ /;[[:space:]]*$/)
            ends[++count] = k
    }
    for (k = 2; k <= count; k++)
        if (index(lines[ends[k]], "/*") == 0)
            shared[ends[k]] = comment_text(b, e)
}
function emit(k, text) {
    if (k in shared)
        text = text " /**< " shared[k] " */"
    print text
}
{ lines[++n] = $0 }
END {
    # First pass: where each leading comment ends, and the declarations that
    # share it (at file scope only: a struct's members each get their own).
    seen = 0
    plain = 0
    depth = 0
    in_macro = 0
    for (k = 1; k <= n; k++) {
        line = lines[k]
        code = line
        sub(/\/\*.*/, "", code)
        continued = in_macro
        in_macro = line ~ /\\[[:space:]]*$/
        if (!plain && !continued && !in_macro && code !~ /extern "C"/) {
            depth += gsub(/{/, "{", code)
            depth -= gsub(/}/, "}", code)
            if (depth < 0) # the `}` closing extern "C"
                depth = 0
        }
        if (plain) {
            if (index(line, "*/") > 0)
                plain = 0
            continue
        }
        start = index(line, "/*")
        if (start == 0)
            continue
        before = substr(line, 1, start - 1)
        if (!seen || banner(line) || before !~ /^[[:space:]]*$/) {
            seen = 1
            if (index(substr(line, start + 2), "*/") == 0)
                plain = 1
            continue
        }
        e = k
        while (e <= n && index(e == k ? substr(lines[e], start + 2) : lines[e], "*/") == 0)
            e++
        if (depth == 0)
            share_comment(k, e)
        k = e
    }

    # Second pass: rewrite the comments.
    seen_comment = 0
    in_doc = 0
    in_plain = 0
    after_banner = 0
    for (k = 1; k <= n; k++) {
        line = lines[k]
        if (in_doc) {
            emit(k, body(line))
            continue
        }
        if (in_plain) {
            if (index(line, "*/") > 0)
                in_plain = 0
            emit(k, line)
            continue
        }
        start = index(line, "/*")
        if (start == 0 || substr(line, start, 3) == "/**") {
            after_banner = 0
            emit(k, line)
            continue
        }
        before = substr(line, 1, start - 1)
        rest = substr(line, start + 2)
        if (line ~ /SPDX-License-Identifier/) { # the license line stays plain
            emit(k, line)
            continue
        }
        if (!seen_comment) { # the file's own comment
            seen_comment = 1
            emit(k, before "/** @file" body(rest))
            continue
        }
        if (banner(line) || (after_banner && before ~ /^[[:space:]]*$/) ||
            conditional_or_close(before)) {
            after_banner = banner(line)
            if (index(rest, "*/") == 0)
                in_plain = 1
            emit(k, line)
            continue
        }
        after_banner = 0
        if (before ~ /^[[:space:]]*$/)
            emit(k, before "/**" body(rest)) # documents what follows
        else
            emit(k, before "/**<" body(rest)) # documents the code before it
    }
}
