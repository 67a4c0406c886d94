# shellcheck shell=bash
# Sourced by scripts/check-fresh-machine and scripts/container-check: a Debian bookworm root
# file system made by debootstrap (minbase), cached as a tarball.
#
# DICOM_ADAPTER_CACHE (default /var/cache/dicom-adapter) holds the tarballs (one per package
# list); delete a tarball to rebuild it. Needs root and debootstrap (installed when missing).

SUITE=bookworm
CACHE="${DICOM_ADAPTER_CACHE:-/var/cache/dicom-adapter}"

# The Debian mirror this machine's apt uses (deb.debian.org when none is found).
debian_mirror() {
    local uri=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        uri="$(awk '/^[[:space:]]*URIs:/ && !/security/ { print $2; exit }' \
            /etc/apt/sources.list.d/*.sources)"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(sed -e 's/\[[^]]*\]//' /etc/apt/sources.list \
            | awk '$1 == "deb" && !/security/ { print $2; exit }')"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# remove_tree DIR: rm -rf DIR, after unmounting whatever is mounted below it (never deletes
# through a mount, e.g. a bind-mounted /dev).
remove_tree() {
    local dir mounts
    dir="$(realpath -m "$1")"
    mounts="$(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)"
    if [ -n "$mounts" ]; then
        # shellcheck disable=SC2086
        umount -l $mounts 2>/dev/null || true
    fi
    if awk -v d="$dir/" 'index($5, d) == 1 { found = 1 } END { exit !found }' \
        /proc/self/mountinfo; then
        echo "remove_tree: still mounted below $dir; not deleting it" >&2
        return 1
    fi
    rm -rf "$dir"
}

# debian_root_tarball PACKAGE...: prints the path of a cached tarball of a minbase root with
# PACKAGE... added, building it first (about a minute) if it is not cached yet.
debian_root_tarball() {
    local key tarball work mirror
    key="$(printf '%s\n' "$SUITE" "$@" | sha256sum | cut -c1-12)"
    tarball="$CACHE/$SUITE-minbase-$key.tar"
    if [ -f "$tarball" ]; then
        echo "$tarball"
        return 0
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            debootstrap >/dev/null
    fi
    mkdir -p "$CACHE"
    mirror="$(debian_mirror)"
    work="$(mktemp -d "$CACHE/debootstrap.XXXXXX")"
    echo "debootstrap --variant=minbase $SUITE from $mirror, with: $*" >&2
    if ! debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" "$SUITE" \
        "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -20 "$work/debootstrap.log" >&2
        remove_tree "$work"
        return 1
    fi
    # What a fresh machine or a slim image has: no package lists, caches or logs.
    rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin \
        "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/log/"*.log
    tar -C "$work/root" --numeric-owner -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    remove_tree "$work"
    echo "$tarball"
}
