#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Generate docs/api.md, the API reference, from the contract comments in the sources.

Every routine include/wdm.h declares has its contract written once: above its
definition in kernel/ (out-of-line routines, named by the header's "Defined ...
in kernel/x/y.c" pointer), or above the inline definition in wdm.h itself. This
script collects the routines in header order, grouped by the header's
"/* ---- family */" sections, and writes each one's signature, contract and home.
A family's introduction is the top comment of each source file it draws from.

    scripts/gen-apidoc.py [-o OUT]   write the reference (default: stdout)
    scripts/gen-apidoc.py --check    exit 1 if any routine has no contract comment

It exits 1 and names the routine when a declared routine has no definition or no
contract comment, so `make check-docs` fails on both. Python 3 standard library only.
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "include/wdm.h"

# Bug-check names by code, read from wdm.h, for the misuse index at the end.
BUGCHECK_RE = re.compile(r"^#define\s+([A-Z_]+)\s+(0x[0-9A-Fa-f]{8})\s*$")
SECTION_RE = re.compile(r"^/\*\s*-{8,}\s*(.+?)\s*\*/\s*$")
POINTER_RE = re.compile(r"Defined,? .*?\bin (kernel/\S+?\.c)")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
ATTR_RE = re.compile(r"__attribute__\(\((?:[^()]|\([^()]*\))*\)\)")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read().split("\n")


# Citations of the project's working documents, which live outside this repository:
# the reference must stand alone, so they are left out of it.
DOC = r"(?:API|DESIGN|STYLE)\.md"
SECT = r"§[0-9]+(?:\.[0-9]+)*(?:\s*-\s*§[0-9]+(?:\.[0-9]+)*)?"
CITATIONS = [
    (re.compile(r"\s*\(" + DOC + r"\s*" + SECT + r"(?:,\s*" + DOC + r"\s*" + SECT + r")*\)"), ""),
    (re.compile(r"\(" + DOC + r"\s*" + SECT + r"(?:,\s*" + DOC + r"\s*" + SECT + r")*[;,]\s*"), "("),
    (re.compile(r",\s*(?:not\s+)?" + DOC + r"\s*" + SECT), ""),
    (re.compile(r"(?m)^" + DOC + r"\s*" + SECT + r"[.:]\s*"), ""),
    (re.compile(r",\s*" + SECT + r"(?=\))"), ""),
]


def clean_comment(lines):
    """The text of a /* */ or // comment block, without the comment markers."""
    out = []
    for line in lines:
        s = line.strip()
        if s.startswith("//"):
            out.append(s[2:].strip())
            continue
        s = re.sub(r"^/\*+ ?", "", s)
        s = re.sub(r"\*+/$", "", s)
        s = re.sub(r"^\*(?!/) ?", "", s)
        out.append(s.rstrip())
    text = "\n".join(out)
    for pattern, replacement in CITATIONS:
        text = pattern.sub(replacement, text)
    out = [line.rstrip() for line in text.split("\n")]
    while out and not out[0]:
        out.pop(0)
    while out and not out[-1]:
        out.pop()
    return out


def emit_text(w, lines, quote=False):
    """Comment text as Markdown: prose as is, a block with indented lines kept verbatim."""
    if any(line.startswith(" ") for line in lines):
        w("```text")
        for line in lines:
            w(line)
        w("```")
    else:
        for line in lines:
            w(line.strip())
    w("")


def comment_above(lines, index):
    """The comment block that ends on the line just above lines[index], or None."""
    i = index - 1
    if i < 0:
        return None
    s = lines[i].strip()
    if s.endswith("*/"):
        j = i
        while j >= 0 and "/*" not in lines[j]:
            j -= 1
        if j < 0:
            return None
        return clean_comment(lines[j : i + 1])
    if s.startswith("//"):
        j = i
        while j - 1 >= 0 and lines[j - 1].strip().startswith("//"):
            j -= 1
        return clean_comment(lines[j : i + 1])
    return None


def file_intro(lines):
    """The file's top comment (after the SPDX line), as paragraphs of text."""
    i = 0
    if lines and "SPDX-License-Identifier" in lines[0]:
        i = 1
    if i < len(lines) and lines[i].strip().startswith("/*"):
        j = i
        while "*/" not in lines[j]:
            j += 1
        return clean_comment(lines[i : j + 1])
    return []


def statement(lines, i):
    """The declaration starting at line i up to its ';' or '{': (text, last line index)."""
    parts = []
    j = i
    while True:
        parts.append(lines[j].strip())
        if lines[j].rstrip().endswith(";") or lines[j].strip() == "{" or lines[j].rstrip().endswith("{"):
            break
        j += 1
    text = " ".join(parts)
    text = re.sub(r"\s*\{$", "", text).strip()
    return text, j


def parse_header():
    """Families in header order: [(title, [routine dict])], and the bug-check names."""
    lines = read(HEADER)
    families = []
    bugchecks = {}
    intros = {}
    title = "Basics"
    pointer = None
    routines = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = BUGCHECK_RE.match(line)
        if m and title == "bug checks":
            bugchecks[int(m.group(2), 16)] = m.group(1)
        m = SECTION_RE.match(line)
        if m:
            if routines:
                families.append((title, routines))
            title, routines, pointer = m.group(1), [], None
            # A comment that opens the section and stands alone is the family's introduction.
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if lines[j].lstrip().startswith("/*") and not POINTER_RE.search(lines[j]):
                k = j
                while "*/" not in lines[k]:
                    k += 1
                if k + 1 < len(lines) and not lines[k + 1].strip():
                    intros[title] = clean_comment(lines[j : k + 1])
            i += 1
            continue
        m = POINTER_RE.search(line)
        if m and line.lstrip().startswith("/*"):
            pointer = m.group(1)
            i += 1
            continue
        stripped = line.strip()
        if (
            not line.startswith((" ", "\t", "#", "/", "*", "}", "{", "typedef", "_Static_assert"))
            and stripped
        ):
            # A declaration or an inline definition at file scope.
            text, last = statement(lines, i)
            inline = ATTR_RE.sub("", text).strip().startswith("static inline") or (
                i > 0 and lines[i - 1].startswith(("static inline", "__attribute__((noreturn)) static inline"))
            )
            m = re.search(r"(" + IDENT + r")\s*\(", ATTR_RE.sub("", text))
            if m and "=" not in text.split("(")[0] and not text.startswith(("struct", "union", "enum")):
                name = m.group(1)
                start = i
                if inline and "static inline" not in text:
                    start = i - 1
                    text = lines[i - 1].strip() + " " + text
                sig = re.sub(r"\s+", " ", text).rstrip(";")
                sig = re.sub(r"\(\s+", "(", sig)
                if inline:
                    if not name.startswith(("Rtlp", "Fatal")):
                        routines.append(
                            {
                                "name": name,
                                "sig": re.sub(r"^static inline\s+", "", sig).replace(
                                    "__attribute__((noreturn)) static inline ", ""
                                ),
                                "home": HEADER,
                                "comment": comment_above(lines, start),
                                "inline": True,
                            }
                        )
                else:
                    routines.append(
                        {
                            "name": name,
                            "sig": sig,
                            "home": pointer,
                            "decl_comment": comment_above(lines, i),
                            "inline": False,
                        }
                    )
            i = last + 1
            continue
        i += 1
    if routines:
        families.append((title, routines))
    return families, bugchecks, intros


def find_definition(path, name):
    """(comment lines or None, line number) of name's definition in path, or (None, None)."""
    if not os.path.isfile(os.path.join(ROOT, path)):
        return None, None
    lines = read(path)
    for i, line in enumerate(lines):
        if re.match(r"^" + re.escape(name) + r"\s*\(", line):
            # The return type sits on the line(s) above: walk up over them.
            j = i - 1
            while j >= 0 and lines[j].strip() and not lines[j].strip().endswith(("*/", ";", "}")) and not lines[j].strip().startswith("//"):
                j -= 1
            return comment_above(lines, j + 1), i + 1
    return None, None


def body_of(path, name):
    """The lines of name's definition in path, with a DBG-only flag per line, or None."""
    lines = read(path)
    start = None
    for i, line in enumerate(lines):
        if re.match(r"^" + re.escape(name) + r"\s*\(", line):
            start = i
            break
    if start is None:
        return None
    # Is the definition itself inside #if DBG (a checked-build-only helper)?
    stack = []
    for line in lines[:start]:
        t = line.strip()
        if t.startswith("#if"):
            stack.append(t in ("#if DBG", "#ifdef DBG"))
        elif t.startswith("#else") and stack:
            stack[-1] = False
        elif t.startswith("#endif") and stack:
            stack.pop()
    outer = any(stack)
    out, depth, started = [], 0, False
    for j in range(start, len(lines)):
        out.append(lines[j])
        depth += lines[j].count("{") - lines[j].count("}")
        started = started or "{" in lines[j]
        if started and depth == 0:
            break
        if lines[j].rstrip().endswith(";") and not started:
            return None  # a prototype, not the definition
    # Which lines sit under #if DBG (and not its #else)?
    flags, stack = [], []
    for line in out:
        s = line.strip()
        if s.startswith("#if"):
            stack.append(s in ("#if DBG", "#ifdef DBG"))
        elif s.startswith("#else") and stack:
            stack[-1] = False
        elif s.startswith("#endif") and stack:
            stack.pop()
        flags.append(outer or any(stack))
    return list(zip(out, flags))


def call_args(text, pos):
    """The top-level arguments of the call whose '(' is at text[pos]: (args, end)."""
    depth, args, cur = 0, [], ""
    for k in range(pos, len(text)):
        ch = text[k]
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append(cur.strip())
                return [re.sub(r"\s+", " ", a) for a in args], k
        elif ch == "," and depth == 1:
            args.append(cur.strip())
            cur = ""
            continue
        cur += ch
    return None, len(text)


def params(values):
    names = ["P%d %s" % (n + 1, v) for n, v in enumerate(values)]
    return "(" + ", ".join(names) + ")"


def code_of(token, names_to_codes):
    if token in names_to_codes:
        return names_to_codes[token]
    if re.match(r"^0x[0-9A-Fa-f]+$", token):
        return int(token, 16)
    return None


def checks_in(path, name, known, bugchecks, depth=0, seen=None):
    """The bug checks name's definition raises, directly or through helpers, in order."""
    seen = seen if seen is not None else set()
    if (path, name) in seen or depth > 4:
        return []
    seen.add((path, name))
    body = body_of(path, name)
    if body is None:
        return []
    names_to_codes = {v: k for k, v in bugchecks.items()}
    local = set()
    for line in read(path):
        m = re.match(r"^(" + IDENT + r")\s*\(", line)
        if m:
            local.add(m.group(1))
    text = "\n".join(line for line, _ in body[1:])
    found, public = [], []
    offsets, acc = [], 0
    for line, flag in body[1:]:
        offsets.append((acc, acc + len(line) + 1, flag))
        acc += len(line) + 1

    def in_dbg(pos):
        return any(a <= pos < b and f for a, b, f in offsets)

    def label(code):
        return "`0x%X` %s" % (code, bugchecks.get(code, ""))

    for m in re.finditer(r"\b(" + IDENT + r")\s*\(", text):
        callee = m.group(1)
        args, _ = call_args(text, m.end() - 1)
        if args is None:
            continue
        if callee == "KiCheckIrqlAtMost":
            found.append("%s if IRQL > %s %s, checked build"
                         % (label(0xA), args[0], params([args[1], "IRQL", "0", "caller IP"])))
        elif callee in ("KiCheckIrqlAtLeast", "KiCheckAtDpcLevel"):
            minimum = args[0] if callee == "KiCheckIrqlAtLeast" else "DISPATCH_LEVEL"
            obj = args[1] if callee == "KiCheckIrqlAtLeast" else args[0]
            found.append("%s if IRQL < %s %s, checked build"
                         % (label(0x9), minimum, params([obj, "IRQL", minimum, "0"])))
        elif callee == "KiCheckIrqlIsDispatch":
            found.append("%s unless IRQL == DISPATCH_LEVEL %s, checked build"
                         % (label(0x8), params([args[0], "IRQL", "0", "0"])))
        elif callee == "KiCheckRaiseTo":
            found.append("%s if IRQL > %s %s, checked build"
                         % (label(0xA), args[1], params([args[0], "IRQL", "1", "caller IP"])))
        elif callee == "KiCheck" and len(args) == 6:
            code = code_of(args[1], names_to_codes)
            if code is not None:
                found.append("%s unless `%s` %s, checked build"
                             % (label(code), args[0], params(args[2:])))
        elif callee in ("KeBugCheckEx", "KeBugCheck") and callee != name:
            code = code_of(args[0], names_to_codes)
            if code is not None:
                build = "checked build" if in_dbg(m.start()) else "both builds"
                found.append("%s %s, %s" % (label(code), params(args[1:]) if len(args) > 1 else "", build))
        elif callee == "ASSERT" and args:
            found.append("%s unless `%s` (a failed ASSERT: P1 the expression, P2 the file, "
                         "P3 the line, P4 0), checked build" % (label(0xE2), args[0]))
        elif callee in known and callee != name:
            # A public routine called: reported only for wrappers (below).
            public.append(callee)
        elif callee in local and callee != name and not callee.startswith("Ki" + "Check" + "Irql"):
            for c in checks_in(path, callee, known, bugchecks, depth + 1, seen):
                found.append(c)
    if not found and depth == 0:
        # A wrapper with no check of its own: its misuse is what the routines it calls catch.
        for callee in public:
            for c in checks_in(known[callee], callee, known, bugchecks, depth + 1, seen):
                found.append(c if " via " in c else c + ", via `%s`" % callee)
    out = []
    for c in found:
        c = re.sub(r"\s+,", ",", c)
        c = c.replace("(ULONG_PTR)", "").replace("__builtin_return_address(0)", "caller IP")
        c = re.sub(r"\b(HalGetCurrentIrql|KeGetCurrentIrql)\(\)", "IRQL", c)
        c = re.sub(r"__atomic_load_n\(&([^,()]+), __ATOMIC_[A-Z]+\)", r"\1", c)
        c = c.replace("__builtin_frame_address(0)", "stack pointer")
        if c not in out:
            out.append(c)
    return out


def render(families, bugchecks, intros):
    out = []
    w = out.append
    w("<!-- Generated by scripts/gen-apidoc.py from include/wdm.h and the contract comments")
    w("     in kernel/. Do not edit: change the comment above the routine, then `make docs`. -->")
    w("# Spindle API reference")
    w("")
    w("Every routine that `include/wdm.h` declares, grouped as the header groups them. For")
    w("each: its prototype, its contract (what it does, the IRQL it may be called at and")
    w("leaves, what it returns, the locks it takes, and what misuse bug-checks with which")
    w("code and parameters), and the file that defines it. The contract is the comment")
    w("written above the definition; this page is regenerated from those comments by")
    w("`make docs`, and `make check-docs` fails when it is stale.")
    w("")
    w("Conventions used in the contracts:")
    w("")
    w("- \"IRQL in\" is the level the caller may be at; \"out\" the level on return.")
    w("- \"Checked build\" means DBG=1 (the default). Checks marked so are compiled out of")
    w("  the free build (DBG=0), which then has undefined behaviour on that misuse.")
    w("  Checks not marked so are made by both builds.")
    w("- A bug check is written as its code in hex, then P1..P4 for its four parameters;")
    w("  the [bug-check index](#bug-check-index) at the end names every code.")
    w("- \"Bug checks found in the code\" is not written by hand: the generator lists the")
    w("  checks (`KiCheck*`, `ASSERT`) and `KeBugCheckEx` calls in the routine's body and")
    w("  in the file-local helpers it calls, with their conditions and parameters as the")
    w("  source writes them. A routine with none of its own that calls other public")
    w("  routines shows theirs, marked \"via\". Checks made by inline helpers in headers")
    w("  (the list-entry checks, the lock-word checks) appear only in the prose.")
    w("- Macros that are plain aliases (the Acquire/Release/NoFence interlocked forms,")
    w("  `RtlCopyMemory` and friends, `ExInterlockedFlushSList`) are not listed; see")
    w("  `include/wdm.h`.")
    w("")
    w("## Families")
    w("")
    for title, routines in families:
        w("- [%s](#%s) (%d)" % (title[0].upper() + title[1:], anchor(title), len(routines)))
    w("- [Bug-check index](#bug-check-index)")
    w("")
    intro_done = set()
    known = {r["name"]: r["home"] for _, rs in families for r in rs if not r["inline"]}
    for _, routines in families:
        for r in routines:
            r["checks"] = [] if r["inline"] else checks_in(r["home"], r["name"], known, bugchecks)
    for title, routines in families:
        w("## %s" % title[0].upper() + title[1:])
        w("")
        if intros.get(title):
            w("From `%s`:" % HEADER)
            w("")
            emit_text(w, intros[title])
        homes = []
        for r in routines:
            if r["home"] not in homes:
                homes.append(r["home"])
        for home in homes:
            if home == HEADER or home in intro_done:
                continue
            intro_done.add(home)
            intro = file_intro(read(home))
            if intro:
                w("From `%s`:" % home)
                w("")
                emit_text(w, intro)
        w("| Routine | Defined in |")
        w("|---|---|")
        for r in routines:
            w("| [`%s`](#%s) | `%s` |" % (r["name"], r["name"].lower(), r["home"]))
        w("")
        for r in routines:
            w("### %s" % r["name"])
            w("")
            w("```c")
            w(r["sig"] + ";")
            w("```")
            w("")
            emit_text(w, r["comment"])
            checks = r["checks"]
            if checks:
                w("Bug checks found in the code:")
                w("")
                for c in checks:
                    w("- " + c)
                w("")
            w("*Defined in `%s`.*" % r["home"])
            w("")
    w("## Bug-check index")
    w("")
    w("The bug-check codes `include/wdm.h` defines, and the public routines that raise")
    w("them: in their own code or a helper of theirs (not counting the routines they call),")
    w("or as their contract says. A code no public routine raises comes from the kernel")
    w("itself: the trap handlers, the DPC watchdog, the pool's header checks.")
    w("")
    w("| Code | Name | Raised by |")
    w("|---|---|---|")
    for code in sorted(bugchecks):
        name = bugchecks[code]
        users = []
        pat = re.compile(r"\b%s\b" % name)
        own = re.compile(r"^`0x%X` " % code)
        for _, routines in families:
            for r in routines:
                if any(pat.search(line) for line in r["comment"]) or any(
                    own.match(c) and " via " not in c for c in r["checks"]
                ):
                    users.append("`%s`" % r["name"])
        w("| 0x%X | `%s` | %s |" % (code, name, ", ".join(users) if users else "(the kernel itself)"))
    w("")
    return "\n".join(out) + "\n"


def anchor(title):
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", help="write here instead of stdout")
    ap.add_argument("--check", action="store_true", help="only check that every routine has a contract")
    args = ap.parse_args()

    families, bugchecks, intros = parse_header()
    errors = []
    for _, routines in families:
        for r in routines:
            if r["inline"]:
                if not r["comment"]:
                    errors.append("%s: inline %s has no contract comment above it" % (HEADER, r["name"]))
                continue
            if not r["home"]:
                errors.append("%s: %s has no 'Defined ... in kernel/...' pointer" % (HEADER, r["name"]))
                continue
            comment, line = find_definition(r["home"], r["name"])
            if line is None:
                errors.append("%s: %s is not defined there (wdm.h points to it)" % (r["home"], r["name"]))
            elif not comment:
                errors.append("%s:%d: %s has no contract comment above its definition" % (r["home"], line, r["name"]))
            r["comment"] = comment or []
            r["line"] = line
    if errors:
        for e in errors:
            print("gen-apidoc: " + e, file=sys.stderr)
        sys.exit(1)
    if args.check:
        return
    text = render(families, bugchecks, intros)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
