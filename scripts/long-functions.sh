#!/usr/bin/env bash
#! scripts/long-functions.sh [THRESHOLD] — enforces the house rule "no non-test function is over
#! 100 lines": lists every Rust `fn` with a body in crates/*/src and tests/src, counted from its
#! `fn` line to its closing brace, longest first, and prints those over THRESHOLD lines (default
#! 100; 0 lists them all). Test code is left out: `mod tests` blocks, items under #[cfg(test)],
#! #[test]/#[tokio::test] functions, and files named *tests.rs or under a src/**/tests/ folder.
#! Exits 1 if any function is over a non-zero threshold, so CI can run it as a check.
#
# The scan is a small Rust tokenizer, not a parser: braces inside strings (raw ones too), char
# literals and comments are skipped, and a brace opened after a test attribute or `mod tests`
# marks everything up to its closing brace as test code. Output: `LINES  path:line  Type::fn`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
threshold="${1:-100}"
case "$threshold" in
  '' | *[!0-9]*) echo "usage: scripts/long-functions.sh [THRESHOLD]  (a line count, default 100)" >&2; exit 2 ;;
esac
exec python3 - "$threshold" <<'PY'
import glob, os, re, sys

threshold = int(sys.argv[1])
IDENT_START = re.compile(r"[A-Za-z_]")
IDENT_CHAR = re.compile(r"[A-Za-z0-9_]")


def tokens(text):
    """Yields (kind, text, line) for identifiers and punctuation; literals and comments are dropped."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2  # block comments nest in Rust
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += text[i] == "\n"
                    i += 1
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                line += text[i] == "\n" or text[i : i + 2] == "\\\n"
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == "'":
            if text[i + 1 : i + 2] == "\\":  # escaped char literal: '\n', '\'', '\u{7f}'
                j = i + 3
                while j < n and text[j] != "'":
                    j += 1
                i = j + 1
            elif text[i + 2 : i + 3] == "'":  # plain char literal, '{' included
                i += 3
            else:  # lifetime or label
                i += 1
        elif IDENT_START.match(c):
            j = i
            while j < n and IDENT_CHAR.match(text[j]):
                j += 1
            word = text[i:j]
            k = j
            if word in ("r", "br", "cr"):
                while k < n and text[k] == "#":
                    k += 1
                if k < n and text[k] == '"':  # raw string: ends at '"' plus the same number of '#'
                    end = text.find('"' + "#" * (k - j), k + 1)
                    end = n if end < 0 else end
                    line += text.count("\n", i, end)
                    i = end + 1 + (k - j)
                    continue
                if word == "r" and k == j + 1 and k < n and IDENT_START.match(text[k]):  # r#ident
                    i = j + 1
                    continue
            yield ("ident", word, line)
            i = j
        elif c.isdigit():
            while i < n and IDENT_CHAR.match(text[i]):
                i += 1
        else:
            yield ("punct", c, line)
            i += 1


def is_test_attr(attr):
    attr = attr.replace(" ", "")
    if attr in ("test", "tokio::test") or attr.endswith("::test") or attr.startswith("tokio::test("):
        return True
    return attr.startswith("cfg(") and re.search(r"\btest\b", attr) is not None and "not(" not in attr


def impl_name(toks):
    """The type an `impl` block is for: `impl<T> Trait for a::Type<T> where …` gives `Type`."""
    outer, depth, prev = [], 0, ""
    for _, t, _ in toks:  # drop generic parameters and arguments; "->" is not a closing ">"
        if t == "<":
            depth += 1
        elif t == ">" and prev != "-":
            depth -= 1
        elif depth == 0:
            outer.append(t)
        prev = t
    if "where" in outer:
        outer = outer[: outer.index("where")]
    if "for" in outer:
        outer = outer[outer.index("for") + 1 :]
    words = [t for t in outer if IDENT_START.match(t) and t not in ("dyn", "mut", "unsafe", "const")]
    return words[-1] if words else "impl"


def scan(path, found):
    with open(path, encoding="utf-8") as f:
        toks = list(tokens(f.read()))
    # Each open brace: (kind, name, is_test, start_line); kind is "fn", "impl" (trait too), "mod" or "block".
    stack = []
    attrs, file_test = [], False
    pending = None  # what the next "{" opens, once a fn, impl, trait or mod header is read
    i = 0
    while i < len(toks):
        kind, t, line = toks[i]
        in_test = file_test or any(s[2] for s in stack)
        if t == "#" and i + 1 < len(toks) and toks[i + 1][1] in ("[", "!"):
            inner = toks[i + 1][1] == "!"
            j, depth = i + 1 + inner, 0
            start = j
            while j < len(toks):
                depth += {"[": 1, "]": -1}.get(toks[j][1], 0)
                if depth == 0:
                    break
                j += 1
            attr = "".join(x[1] if x[0] == "punct" else " " + x[1] + " " for x in toks[start + 1 : j]).strip()
            if inner and not stack and is_test_attr(attr):
                file_test = True
            elif not inner:
                attrs.append(attr)
            i = j + 1
            continue
        if kind == "ident" and t == "fn" and i + 1 < len(toks) and toks[i + 1][0] == "ident" and pending is None:
            # Find the body: the first "{" outside parentheses/brackets, unless ";" ends a bodiless declaration.
            j, depth = i + 2, 0
            while j < len(toks):
                p = toks[j][1]
                if p in "([":
                    depth += 1
                elif p in ")]":
                    depth -= 1
                elif depth == 0 and p in ("{", ";"):
                    break
                j += 1
            if j < len(toks) and toks[j][1] == "{":
                pending = ("fn", toks[i + 1][1], in_test or any(map(is_test_attr, attrs)), line)
                i = j
            else:
                attrs, i = [], j + 1
            continue
        if kind == "ident" and t == "mod" and i + 2 < len(toks) and toks[i + 2][1] == "{" and pending is None:
            name = toks[i + 1][1]
            pending = ("mod", name, in_test or name == "tests" or any(map(is_test_attr, attrs)), line)
            i += 2
            continue
        if kind == "ident" and t in ("impl", "trait") and pending is None:
            j = i + 1
            while j < len(toks) and toks[j][1] not in ("{", ";"):
                j += 1
            if j < len(toks) and toks[j][1] == "{":
                name = impl_name(toks[i + 1 : j]) if t == "impl" else toks[i + 1][1]
                pending = ("impl", name, in_test or any(map(is_test_attr, attrs)), line)
                i = j
                continue
        if t == "{":
            if pending is None:
                pending = ("block", "", in_test or any(map(is_test_attr, attrs)), line)
            stack.append(pending)
            pending, attrs = None, []
        elif t == "}":
            if stack:
                skind, name, is_test, start = stack.pop()
                if skind == "fn" and not is_test:
                    owners = [s[1] for s in stack if s[0] in ("impl", "fn")]
                    found.append((line - start + 1, path, start, "::".join(owners + [name])))
            attrs = []
        elif t == ";":
            attrs = []
        i += 1
    if stack:  # the tokenizer lost its way (an unusual literal?): say so rather than miscount quietly
        print(f"warning: {path}: {len(stack)} brace(s) left open at end of file", file=sys.stderr)


def skipped(path):
    name = os.path.basename(path)
    inside_src = path.split("/src/", 1)[1]
    return name.endswith("tests.rs") or name.endswith("_test.rs") or "tests/" in "/" + inside_src


paths = sorted(glob.glob("crates/*/src/**/*.rs", recursive=True) + glob.glob("tests/src/**/*.rs", recursive=True))
found = []
for path in paths:
    if not skipped(path):
        scan(path, found)
found.sort(key=lambda f: (-f[0], f[1], f[2]))
over = [f for f in found if f[0] > threshold]
for lines, path, start, name in over:
    print(f"{lines:5}  {path}:{start}  {name}")
sys.stdout.flush()
print(f"{len(over)} of {len(found)} non-test functions are over {threshold} lines", file=sys.stderr)
sys.exit(1 if over and threshold > 0 else 0)
PY
