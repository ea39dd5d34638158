#!/bin/sh
# Makes the Debian base image the `debian` benchmarks build FROM, out of
# Debian packages only (no external registry): `debootstrap --variant=minbase`
# into a folder, packed as a tar (numeric owners, as the archive has them),
# then an image built `FROM scratch` / `ADD rootfs.tar /` / `CMD ["bash"]`
# (how docker-library's debian images are made) and pushed to the local
# registry, where kiln and BuildKit both pull it from.
#
#   bench/debian/make-base.sh            # prints the image reference
#
# Env: SUITE (bookworm), MIRROR (http://deb.debian.org/debian),
#      CACHE (/var/tmp/kiln-debian-base: the .debs and the rootfs tar, so a
#      rerun costs nothing), REF (127.0.0.1:5000/kiln-bench/debian:$SUITE-<tar
#      digest>: a changed tar is a new tag, an unchanged one is not pushed again),
#      KILN_BIN (target/release/kiln).
# Needs root, debootstrap, and the registry on 127.0.0.1:5000.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${CACHE:-/var/tmp/kiln-debian-base}
KILN_BIN=${KILN_BIN:-$here/target/release/kiln}
log() { echo "[debian-base] $*" >&2; }

tar=$CACHE/$SUITE-minbase.tar
if [ ! -s "$tar" ]; then
    mkdir -p "$CACHE/debs"
    rootfs=$CACHE/rootfs-$SUITE
    rm -rf "$rootfs"
    log "debootstrap --variant=minbase $SUITE from $MIRROR (debs cached in $CACHE/debs)"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$rootfs" "$MIRROR" >&2
    # What docker-library's images drop: the package cache and indexes (the
    # workloads run apt-get update first), logs that only say what debootstrap did.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/* 2>/dev/null || true
    mkdir -p "$rootfs/var/lib/apt/lists/partial"
    # docker-library's (debuerreotype's) settings for containers: dpkg
    # without fsync, apt keeping no .debs, no translations.
    echo force-unsafe-io > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
    cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
    echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    # The bench's containers resolve names with the resolv.conf their engine
    # gives them; the host's stays out of the image.
    : > "$rootfs/etc/resolv.conf"
    # /dev's nodes stay out, as in docker-library's images (the engine mounts its own /dev)
    tar --numeric-owner --xattrs --xattrs-include='*' --exclude='./dev/*' --exclude='./proc/*' \
        --exclude='./sys/*' -C "$rootfs" -cf "$tar.part" .
    mv "$tar.part" "$tar"
    rm -rf "$rootfs"
    log "$tar: $(du -h "$tar" | cut -f1)"
fi
REF=${REF:-127.0.0.1:5000/kiln-bench/debian:$SUITE-$(sha256sum "$tar" | cut -c1-12)}

if curl -sf -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://${REF%%/*}/v2/$(echo "${REF#*/}" | sed 's/:/\/manifests\//')"; then
    log "$REF is in the registry"
    echo "$REF"
    exit 0
fi
ctx=$(mktemp -d /tmp/kiln-debian-base.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
ln "$tar" "$ctx/rootfs.tar" 2>/dev/null || cp "$tar" "$ctx/rootfs.tar"
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' > "$ctx/Dockerfile"
export KILN_ROOT="$ctx/kiln-root"
log "building and pushing $REF"
"$KILN_BIN" build --progress plain -t "$REF" "$ctx" >&2
"$KILN_BIN" push -q "$REF" >&2
echo "$REF"
