# Shared set-up for the CI steps that run containers with podman on this kind
# of machine (no Docker engine, no registry, no CAP_SYS_RESOURCE, hybrid
# cgroups; see ../shared/notes/containers.md). Sourced, not run:
#
#   . docker/podman-lib.sh
#   sg_podman_init "$workdir" || exit 1     # tools, containers.conf, base image
#   "${PODMAN[@]}" run --rm docker.io/library/debian:bookworm-slim true
#
# sg_podman_init installs podman, runc and debootstrap when missing, writes a
# containers.conf into $workdir and exports CONTAINERS_CONF, sets the PODMAN
# array (with sudo when not root), and makes the debian:bookworm-slim base
# image with debootstrap from the mirror apt already uses when it is not in
# podman's store yet (about 2 minutes, once per machine). Messages go to
# stderr prefixed with "podman-lib:"; returns non-zero with a reason on failure.

SG_BASE_IMAGE=docker.io/library/debian:bookworm-slim

sg_podman_init() {
    local work=$1
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"

    local need=() p
    for p in podman runc debootstrap; do
        command -v "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if (( ${#need[@]} > 0 )); then
        echo "podman-lib: installing ${need[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq >/dev/null || { echo "podman-lib: apt-get update failed" >&2; return 1; }
        if ! $sudo apt-get install -y -qq --no-install-recommends podman runc debootstrap \
                uidmap slirp4netns >/dev/null; then
            echo "podman-lib: cannot install podman runc debootstrap" >&2
            return 1
        fi
    fi

    # crun 1.8 refuses hybrid cgroups; root podman asks for ulimits the
    # shell may not raise without CAP_SYS_RESOURCE.
    local nofile
    nofile=$(ulimit -Hn)
    [[ "$nofile" == unlimited ]] && nofile=1048576
    cat > "$work/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    export CONTAINERS_CONF="$work/containers.conf"
    PODMAN=($sudo env CONTAINERS_CONF="$CONTAINERS_CONF" podman)

    if "${PODMAN[@]}" image exists "$SG_BASE_IMAGE"; then
        return 0
    fi
    local mirror root
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "podman-lib: making $SG_BASE_IMAGE with debootstrap from $mirror" >&2
    root="$work/rootfs"
    if ! $sudo debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -20 "$work/debootstrap.log" >&2
        echo "podman-lib: debootstrap bookworm failed" >&2
        return 1
    fi
    # Slim it the way the official -slim image is: no docs, man pages, locales, apt lists.
    $sudo rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
    if ! $sudo tar --numeric-owner -C "$root" -c . | \
            "${PODMAN[@]}" import --change 'CMD ["bash"]' - "$SG_BASE_IMAGE" >/dev/null 2>&1; then
        $sudo rm -rf "$root"
        echo "podman-lib: cannot import the base image" >&2
        return 1
    fi
    $sudo rm -rf "$root"
}

# The source tree as a fresh clone would have it, without build output:
# tracked and untracked-but-not-ignored files. sg_source_tar SRC | tar -x -C DIR
sg_source_tar() {
    local src=$1
    if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$src" && git ls-files -co --exclude-standard -z | tar -c --null -T - --ignore-failed-read 2>/dev/null)
    else
        tar -C "$src" --exclude='./build*' --exclude=./.git -c .
    fi
}
