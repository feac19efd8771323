#!/usr/bin/env bash
# check-layering.sh - check STYLE.md §1's "who may include whom" table.
#
# Usage: scripts/check-layering.sh [--root DIR] [-v]
#   --root DIR  the tree to check (default: the repository this script is in)
#   -v          also list every file checked
#
# Every *.c and *.h under lib/ arch/ hal/ kernel/ include/ tests/ is read;
# each `#include "..."` or `#include <...>` is resolved the way the build
# resolves it (the including file's folder for "...", then the repository
# root, include/ and tests/, i.e. -I. -Iinclude -Itests; <stdint.h> and the
# other freestanding compiler headers are their own bottom layer) and checked
# against the layer of the including file:
#
#   lib/      lib/, compiler headers
#   arch/     lib/, arch/, kernel/kihal.h
#   hal/      lib/, arch/, include/, hal/, kernel/kihal.h
#   kernel/   lib/, include/, hal/hal.h, arch/x86_64/x86.h, kernel/
#   include/  include/ only
#   tests/    anything
#   (every layer may include the compiler headers; kernel/kihal.h is the one
#   header through which the HAL and arch/ call up into the kernel)
#
# boot/*.asm may %include only .inc files (the offsets shared with C).
#
# NASM upcalls: every `extern NAME` in boot/ and arch/ *.asm must be declared
# in kernel/kihal.h (an Arch->Kernel or Boot->Kernel upcall), be a `global` of
# another .asm file in boot/ or arch/, be declared in arch/x86_64/x86.h, or be
# a symbol linker.ld defines (`NAME = .`); anything else is a violation,
# printed as `file:line: <layer> may not call up to NAME`.
#
# Prints each violation as `file:line: <layer> may not include <target>` and
# exits 1 if there is any, 0 otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
verbose=0

while [ $# -gt 0 ]; do
    case "$1" in
        --root)
            [ $# -ge 2 ] || { echo "check-layering: --root needs a folder" >&2; exit 2; }
            root=$(cd "$2" && pwd)
            shift 2
            ;;
        -v) verbose=1; shift ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
            exit 0
            ;;
        *) echo "check-layering: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

LAYERS=(lib arch hal kernel include tests)

# Freestanding headers the compiler provides (-nostdinc -isystem <gcc dir>).
COMPILER_HEADERS=" stdint.h stddef.h stdbool.h stdarg.h "

# What each layer may include: space-separated globs over repository paths.
declare -A ALLOWED=(
    [lib]="lib/*"
    [arch]="lib/* arch/* kernel/kihal.h"
    [hal]="lib/* arch/* include/* hal/* kernel/kihal.h"
    [kernel]="lib/* include/* hal/hal.h arch/x86_64/x86.h kernel/*"
    [include]="include/*"
    [tests]="*"
)

# Search path of the build after the including file's own folder.
SEARCH_DIRS=("" include tests)

violations=0
files=0

report() {
    echo "$1:$2: $3 may not include $4"
    violations=$((violations + 1))
}

# normalize PATH: repository-relative, with . and .. folded.
normalize() {
    realpath -m --relative-to="$root" "$root/$1"
}

# resolve FILE-DIR KIND NAME -> prints a repository path, "compiler:NAME",
# or "unknown:NAME"
resolve() {
    local dir=$1 kind=$2 name=$3 d candidate
    if [ "$kind" = '<' ] && [[ $COMPILER_HEADERS == *" $name "* ]]; then
        echo "compiler:$name"
        return
    fi
    if [ "$kind" = '"' ] && [ -f "$root/$dir/$name" ]; then
        normalize "$dir/$name"
        return
    fi
    for d in "${SEARCH_DIRS[@]}"; do
        candidate=${d:+$d/}$name
        if [ -f "$root/$candidate" ]; then
            normalize "$candidate"
            return
        fi
    done
    if [[ $COMPILER_HEADERS == *" $name "* ]]; then
        echo "compiler:$name"
        return
    fi
    # Not there (yet, or generated): a path that names a layer belongs to it.
    local first=${name%%/*}
    if [ "$first" != "$name" ] && [[ " ${LAYERS[*]} " == *" $first "* ]]; then
        normalize "$name"
        return
    fi
    echo "unknown:$name"
}

is_allowed() {
    local layer=$1 target=$2 pattern patterns
    [[ $target == compiler:* ]] && return 0
    [ "$layer" = tests ] && return 0
    read -r -a patterns <<<"${ALLOWED[$layer]}" # no pathname expansion
    for pattern in "${patterns[@]}"; do
        # shellcheck disable=SC2053 # $pattern is a glob on purpose
        [[ $target == $pattern ]] && return 0
    done
    return 1
}

include_re='^[[:space:]]*#[[:space:]]*include[[:space:]]*([<"])([^>"]+)[>"]'

check_file() {
    local file=$1 layer=${1%%/*} dir lineno line kind name target shown
    dir=$(dirname "$file")
    files=$((files + 1))
    [ "$verbose" -eq 0 ] || echo "check-layering: $file ($layer)"
    while IFS= read -r line; do
        lineno=${line%%:*}
        line=${line#*:}
        [[ $line =~ $include_re ]] || continue
        kind=${BASH_REMATCH[1]}
        name=${BASH_REMATCH[2]}
        target=$(resolve "$dir" "$kind" "$name")
        is_allowed "$layer" "$target" && continue
        case "$target" in
            unknown:*)
                if [ "$kind" = '<' ]; then shown="<$name> (not a compiler header nor in the tree)"
                else shown="\"$name\" (not found)"; fi
                ;;
            *) shown=$target ;;
        esac
        report "$file" "$lineno" "$layer" "$shown"
    done < <(grep -n -E '^[[:space:]]*#[[:space:]]*include' "$root/$file" || true)
}

cd "$root"
existing=()
for layer in "${LAYERS[@]}"; do
    [ -d "$layer" ] && existing+=("$layer")
done
if [ "${#existing[@]}" -gt 0 ]; then
    while IFS= read -r -d '' file; do
        check_file "${file#./}"
    done < <(find "${existing[@]}" -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
fi

# boot/: NASM may take only the shared offsets (.inc) from anywhere.
if [ -d boot ]; then
    while IFS= read -r -d '' file; do
        files=$((files + 1))
        while IFS= read -r line; do
            lineno=${line%%:*}
            line=${line#*:}
            if [[ $line =~ ^[[:space:]]*%include[[:space:]]+[\"\'\<]([^\"\'\>]+) ]] &&
                [[ ${BASH_REMATCH[1]} != *.inc ]]; then
                report "$file" "$lineno" boot "${BASH_REMATCH[1]} (boot/ takes only .inc offsets)"
            fi
        done < <(grep -n -E '^[[:space:]]*%include' "$file" || true)
    done < <(find boot -type f -name '*.asm' -print0 | sort -z)
fi

# NASM externs: upcalls only through kernel/kihal.h.
strip_c_comments() {
    perl -0pe 's{/\*.*?\*/}{}gs; s{//[^\n]*}{}g' "$1"
}
if [ -d boot ] || [ -d arch ]; then
    asm_dirs=()
    for d in boot arch; do [ -d "$d" ] && asm_dirs+=("$d"); done
    kihal=""
    [ -f kernel/kihal.h ] && kihal=$(strip_c_comments kernel/kihal.h)
    x86h=""
    [ -f arch/x86_64/x86.h ] && x86h=$(strip_c_comments arch/x86_64/x86.h)
    globals=" $(find "${asm_dirs[@]}" -type f -name '*.asm' -exec grep -h -o -E '^[[:space:]]*global[[:space:]]+[A-Za-z_.$?@][A-Za-z0-9_.$?@#~]*' {} + |
        awk '{print $2}' | tr '\n' ' ') "
    while IFS= read -r -d '' file; do
        layer=${file%%/*}
        while IFS= read -r line; do
            lineno=${line%%:*}
            line=${line#*:}
            [[ $line =~ ^[[:space:]]*extern[[:space:]]+([A-Za-z_.$?@][A-Za-z0-9_.$?@#~]*) ]] || continue
            name=${BASH_REMATCH[1]}
            [[ $globals == *" $name "* ]] && continue
            grep -q -w -e "$name" <<<"$kihal" && continue
            grep -q -w -e "$name" <<<"$x86h" && continue
            [ -f linker.ld ] && grep -q -E "(^|[^A-Za-z0-9_])$name[[:space:]]*=" linker.ld && continue
            echo "$file:$lineno: $layer may not call up to $name (not declared in kernel/kihal.h)"
            violations=$((violations + 1))
        done < <(grep -n -E '^[[:space:]]*extern[[:space:]]' "$file" || true)
    done < <(find "${asm_dirs[@]}" -type f -name '*.asm' -print0 | sort -z)
fi

if [ "$violations" -ne 0 ]; then
    echo "check-layering: $violations violation(s) in $files files (STYLE.md §1)"
    exit 1
fi
echo "check-layering: OK ($files files)"
