#!/bin/sh
# Build docker/Dockerfile with podman and test the image, on a machine with no
# Docker engine and no registry: the base image is a Debian root filesystem
# made here with debootstrap and imported into podman.
#
#   sudo docker/podman-local.sh          # or: sudo make docker-test-local
#
# Needs root (debootstrap and rootful podman) and Debian's packages:
#   apt-get install podman debootstrap runc
#
# Settings (environment variables):
#   IMAGE        the image to build            (wavespeed-worker:dev)
#   HANDLER_DIR  the handler folder to copy    (the Dockerfile's default)
#   INPUT        the inline --test_input run   (the folder's test_input.json)
#   BASE_IMAGE   the base image; when it is not in podman's storage it is made
#                with debootstrap               (localhost/wavespeed-base:bookworm)
#   SUITE        the Debian release             (bookworm)
#   MIRROR       the Debian mirror              (http://deb.debian.org/debian)
#   WORK_DIR     containers.conf and the temporary rootfs (/var/tmp/wavespeed-podman)
#
# Everything specific to the machine lives here, not in the Dockerfile, which
# stays as a Docker user would run it:
#   - containers.conf (passed through CONTAINERS_CONF): runc, because crun
#     refuses a host with mixed cgroup v1/v2 hierarchies; and modest
#     default_ulimits, because podman's default open-file and process limits
#     are above the host's hard limits and runc would refuse to start;
#   - the base image trusts the host's CA certificates, so pip reaches the
#     package index through whatever the host trusts (e.g. an intercepting
#     proxy's certificate authority).
#
# Exit status: 0 when the image builds and every check below passes.
set -eu

cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-wavespeed-worker:dev}
HANDLER_DIR=${HANDLER_DIR:-}
BASE_IMAGE=${BASE_IMAGE:-localhost/wavespeed-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
WORK_DIR=${WORK_DIR:-/var/tmp/wavespeed-podman}
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

say() { printf '\n== %s\n' "$*"; }
die() { printf 'podman-local: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and rootful podman need it)"
for tool in podman debootstrap runc; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool is missing: apt-get install podman debootstrap runc"
done

mkdir -p "$WORK_DIR"
cat >"$WORK_DIR/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
CONTAINERS_CONF=$WORK_DIR/containers.conf
export CONTAINERS_CONF

# --- The base image: Debian with python3 and venv, trusting the host's CAs. ---
make_base_image() {
    rootfs=$WORK_DIR/rootfs
    rm -rf "$rootfs"
    say "debootstrap $SUITE into $rootfs (a few minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR"
    # The host's extra authorities (kept where update-ca-certificates finds
    # them, should the image regenerate its bundle) and the bundle itself.
    if [ -d /usr/local/share/ca-certificates ]; then
        cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/"
    fi
    [ -f "$HOST_CA_BUNDLE" ] && cp "$HOST_CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    say "podman import -> $BASE_IMAGE"
    tar -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE"
    rm -rf "$rootfs"
}

if podman image exists "$BASE_IMAGE"; then
    say "base image $BASE_IMAGE is present"
else
    make_base_image
fi

# --- The worker image. ---
say "podman build $IMAGE"
# The Dockerfile's default, read here to compare /app with the folder.
[ -n "$HANDLER_DIR" ] || HANDLER_DIR=$(sed -n 's/^ARG HANDLER_DIR=//p' docker/Dockerfile)
[ -f "$HANDLER_DIR/handler.py" ] || die "$HANDLER_DIR has no handler.py"
podman build -f docker/Dockerfile --ignorefile docker/Dockerfile.dockerignore \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "HANDLER_DIR=$HANDLER_DIR" \
    -t "$IMAGE" .

# --- Checks: each command, its exit status, the expected one. ---
failures=0
run() { podman run --rm "$IMAGE" "$@"; }
show() {  # print a command as one would type it (`run` spelled out)
    [ "$1" = run ] && { shift; set -- podman run --rm "$IMAGE" "$@"; }
    printf '\n$'
    for arg in "$@"; do
        case $arg in
            *[!A-Za-z0-9_./:=-]*) printf " '%s'" "$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")" ;;
            *) printf ' %s' "$arg" ;;
        esac
    done
    printf '\n'
}
expect() {  # expect STATUS COMMAND... : run it, compare its exit status
    want=$1; shift
    show "$@"
    set +e; "$@"; got=$?; set -e
    if [ "$got" = "$want" ]; then
        printf -- '-> exit %s (expected %s) ok\n' "$got" "$want"
    else
        printf -- '-> exit %s (expected %s) FAILED\n' "$got" "$want"
        failures=$((failures + 1))
    fi
}
check() {  # check DESCRIPTION COMMAND... : a condition on captured output
    desc=$1; shift
    if "$@"; then printf -- '-> %s ok\n' "$desc"
    else printf -- '-> %s FAILED\n' "$desc"; failures=$((failures + 1)); fi
}
is_user_uid() { case $1 in 0 | *[!0-9]* | '') return 1;; *) return 0;; esac; }
in_site_packages() { case $1 in */site-packages/wavespeed/*) return 0;; *) return 1;; esac; }

say "test mode"
expect 0 run
expect 0 run python handler.py --test_input "${INPUT:-$(cat "$HANDLER_DIR/test_input.json")}"
# A number where the examples expect an object: their handlers raise (the
# validation example refuses it); then input that is not JSON at all.
expect 1 run python handler.py --test_input '{"input": 5}'
expect 1 run python handler.py --test_input 'not json'

say "the user, the folders it writes, the installed SDK"
show run id -u
uid=$(run id -u) || uid="(failed)"; echo "$uid"
check "runs as a non-root user" is_user_uid "$uid"
show run ls -A /app
listing=$(run ls -A /app | LC_ALL=C sort) || listing="(failed)"; echo "$listing"
# The folder as the build context sends it (the ignore file drops caches).
wanted=$(ls -A "$HANDLER_DIR" | grep -vx -e __pycache__ -e .pytest_cache | LC_ALL=C sort)
check "/app holds only $HANDLER_DIR ($(echo $wanted))" test "$listing" = "$wanted"
expect 0 run sh -c 'touch /app/.w && touch "$WAVESPEED_SPOOL_DIR/.w" && echo /app and "$WAVESPEED_SPOOL_DIR" are writable'
show run python -c "import wavespeed, sys; print(wavespeed.__file__)"
where=$(run python -c "import wavespeed, sys; print(wavespeed.__file__)") || where="(failed)"
echo "$where"
check "wavespeed is imported from site-packages" in_site_packages "$where"

if [ "$failures" -ne 0 ]; then
    say "$failures check(s) FAILED"
    exit 1
fi
say "all checks passed ($IMAGE)"
