#!/usr/bin/env bash
# deps.sh - install the Debian packages Spindle's build and test need.
#
# Usage: scripts/deps.sh [--check] [--list]
#   (none)   install whatever is missing; silent when nothing is
#   --check  install nothing; list the missing packages on stderr and
#            exit 1 if any is missing, 0 otherwise
#   --list   print the package list, one a line, and exit
#
# A package counts as present when
#   dpkg-query -W -f='${Status}' PKG   prints   "install ok installed".
# When something is missing: apt-get update once, then
# apt-get install -y --no-install-recommends <missing>, as root or through
# sudo (non-interactive when there is no terminal). Works on Debian 12.
set -euo pipefail

PACKAGES=(
    # DESIGN.md §7
    qemu-system-x86
    nasm
    grub-pc-bin
    grub-efi-amd64-bin
    grub-common
    xorriso
    mtools
    gnu-efi
    ovmf
    gdb
    # the toolchain itself
    gcc
    make
    clang
    binutils
    clang-format  # make check-format (STYLE.md §10)
    cppcheck      # make cppcheck / make check (STYLE.md §11)
    clang-tidy    # make clang-tidy / make check (STYLE.md §11)
    # make bench: the report and its plots
    python3
    gnuplot-nox
    cpio  # make bench-compare: the peer kit packs its initramfs
    spin  # make verify (models/*.pml)
    # the independent consumers CI reads the results files with
    perl                 # prove (TAP::Parser) reads results.ktap
    nodejs
    node-tap-parser      # a second TAP/KTAP consumer, with subtests
    python3-junitparser  # a JUnit consumer for results.xml
)

die() {
    echo "deps: $*" >&2
    exit 1
}

is_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    [ "$status" = "install ok installed" ]
}

mode=install
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    --list)
        printf '%s\n' "${PACKAGES[@]}"
        exit 0
        ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac

command -v dpkg-query >/dev/null 2>&1 ||
    die "dpkg-query not found: this script needs Debian (12) or a derivative; install by hand: ${PACKAGES[*]}"

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$mode" = check ]; then
    echo "deps: missing: ${missing[*]} (run scripts/deps.sh)" >&2
    exit 1
fi

# Root runs apt-get directly; anyone else goes through sudo, which may not
# prompt when there is no terminal to answer it.
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        die "missing packages: ${missing[*]}; not root and sudo is not installed. As root run: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    if [ -t 0 ]; then
        as_root=(sudo)
    else
        as_root=(sudo -n)
    fi
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
    die "apt-get update failed (as ${as_root[*]:-root}); install by hand: ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    die "apt-get install failed; install by hand: ${missing[*]}"

still=()
for pkg in "${missing[@]}"; do
    is_installed "$pkg" || still+=("$pkg")
done
[ "${#still[@]}" -eq 0 ] || die "still missing after install: ${still[*]}"
