#!/bin/sh
# Builds skill-verifier runner images without a registry: a root filesystem from Debian
# packages (busybox-static for `shell`, debootstrap --variant=minbase for `python` and
# `node`), turned into an image with `docker import`.
#
#   images/build.sh RUNTIME IMAGE     e.g. images/build.sh python skill-verifier/runner-python:dev
#   SINK_BINARY=path images/build.sh sink IMAGE   the network sink (see src/sink)
#
# Every image carries two labels, which make up its identity across engines (an image built
# locally gets a different ID on each engine; see docs/engines.md):
#   dev.skill-verifier.recipe    RECIPE_DIGEST from the caller: this script and the runtime;
#   dev.skill-verifier.packages  sha256 of the sorted "package version" list in the image.
#
# Needs root (debootstrap), a Debian mirror (MIRROR, default deb.debian.org) and a Docker
# engine reachable by the `docker` CLI. Installs debootstrap with apt-get when missing.
# `skill-verifier images prepare` calls this script for every configured image that is
# neither present nor pullable.
set -eu

runtime="${1:?usage: build.sh shell|python|node IMAGE}"
image="${2:?usage: build.sh shell|python|node IMAGE}"
suite="${SUITE:-bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"

log() { printf 'build.sh[%s]: %s\n' "$runtime" "$*" >&2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/sv-image-XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"

apt_ready() {
    if [ ! -f "$work/.apt-updated" ]; then
        log "apt-get update"
        apt-get update -qq >&2
        touch "$work/.apt-updated"
    fi
}

# The parts every image shares: the sandbox user (65534, "nobody"), and the mount points the
# runner puts tmpfs over (/tmp and the working copy /work). The runner starts containers with a
# read-only root filesystem, so nothing else needs to be writable.
finish_rootfs() {
    mkdir -p "$root/etc" "$root/tmp" "$root/work"
    chmod 1777 "$root/tmp"
    if ! grep -q '^nobody:' "$root/etc/passwd" 2>/dev/null; then
        echo 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >>"$root/etc/passwd"
    fi
    if ! grep -q '^nogroup:' "$root/etc/group" 2>/dev/null; then
        echo 'nogroup:x:65534:' >>"$root/etc/group"
    fi
    grep -q '^root:' "$root/etc/passwd" || echo 'root:x:0:0:root:/root:/bin/sh' >>"$root/etc/passwd"
    grep -q '^root:' "$root/etc/group" || echo 'root:x:0:' >>"$root/etc/group"
}

case "$runtime" in
shell)
    # busybox-static: one binary, no libc needed. Unpacked with dpkg-deb, not installed,
    # so the host's own busybox package is left alone.
    apt_ready
    (cd "$work" && apt-get download -qq busybox-static >&2)
    dpkg-deb -x "$work"/busybox-static_*.deb "$work/pkg"
    mkdir -p "$root/bin" "$root/usr/bin" "$root/sbin" "$root/usr/sbin"
    cp "$work/pkg/bin/busybox" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] && continue
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    ;;
python | node)
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt_ready
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
    fi
    case "$runtime" in
    # pip and venv: the verifier installs a skill's requirements (fetched beforehand) into
    # a venv in the test's container, offline (see docs/dependencies.md).
    python) include="python3,python3-pytest,python3-pip,python3-venv" ;;
    node) include="nodejs" ;;
    esac
    log "debootstrap --variant=minbase $suite ($include)"
    debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >&2
    # Trim what a test never needs: package caches, docs, man pages, locales.
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true
    ;;
sink)
    # The network sink (see src/sink): this binary's own `sink` command, run by root with
    # CAP_NET_ADMIN in the container a test's container shares its network with; nftables
    # and iproute2 set its trap. SINK_BINARY is the skill-verifier binary to embed (its
    # debug info stripped when `strip` is there).
    bin="${SINK_BINARY:?the sink recipe needs SINK_BINARY, the skill-verifier binary to embed}"
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt_ready
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
    fi
    log "debootstrap --variant=minbase $suite (iproute2, nftables, libssl3)"
    debootstrap --variant=minbase --include=iproute2,nftables,libssl3 "$suite" "$root" "$mirror" >&2
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
    mkdir -p "$root/usr/local/bin"
    if command -v strip >/dev/null 2>&1; then
        strip --strip-debug -o "$root/usr/local/bin/skill-verifier" "$bin"
    else
        cp "$bin" "$root/usr/local/bin/skill-verifier"
    fi
    chmod 0755 "$root/usr/local/bin/skill-verifier"
    ;;
*)
    echo "unknown runtime: $runtime (want shell, python, node or sink)" >&2
    exit 2
    ;;
esac

finish_rootfs

# What is in the image, package by package: two builds of the same recipe at different times
# can pick up different Debian point releases, and then they are different images.
package_list() {
    if [ -f "$root/var/lib/dpkg/status" ]; then
        awk '/^Package:/ { p = $2 } /^Version:/ { print p " " $2 }' "$root/var/lib/dpkg/status"
    fi
    for deb in "$work"/*.deb; do
        if [ -f "$deb" ]; then
            printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)"
        fi
    done
    if [ "$runtime" = sink ]; then
        printf 'skill-verifier %s\n' "$(sha256sum "$root/usr/local/bin/skill-verifier" | cut -d' ' -f1)"
    fi
}
packages="$(package_list | LC_ALL=C sort | sha256sum | cut -d' ' -f1)"

log "docker import -> $image"
tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'WORKDIR /work' \
    --change 'USER 65534:65534' \
    --change 'CMD ["sh"]' \
    --change "LABEL dev.skill-verifier.recipe=${RECIPE_DIGEST:-unknown}" \
    --change "LABEL dev.skill-verifier.packages=$packages" \
    --message "skill-verifier runner ($runtime, $suite)" \
    - "$image" >&2
log "done: $image"
