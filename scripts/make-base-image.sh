#!/usr/bin/env bash
# Makes the Debian bookworm base image from Debian's own packages, for machines where no public
# image registry answers: debootstrap's minimal variant, trimmed as Debian's slim images are (no
# documentation, manual pages or translations, now or from later installs; no package cache),
# imported into Docker. The Dockerfiles take it as their BASE_IMAGE build argument (make images
# does this when the default base, debian:bookworm-slim pinned by digest, cannot be pulled).
# Idempotent: an image made by this same recipe is kept; one made by an older recipe is remade.
#   scripts/make-base-image.sh [IMAGE]      (default photo-pipeline/debian:bookworm)
set -euo pipefail
image="${1:-photo-pipeline/debian:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
recipe="$(cat "$0" | sha256sum | cut -c1-16)-$(echo "$mirror" | sha256sum | cut -c1-8)"
label=photo-pipeline.base-recipe

made_with="$(docker image inspect --format "{{index .Config.Labels \"$label\"}}" "$image" 2>/dev/null || true)"
if [ "$made_with" = "$recipe" ]; then
    echo "base image $image: present"
    exit 0
fi
command -v debootstrap >/dev/null || {
    echo "installing debootstrap" >&2
    apt-get install --yes --quiet debootstrap >/dev/null
}
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
# The same sources an official image has, security updates included.
cat > "$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
# As debian:bookworm-slim: packages installed later leave out documentation (copyrights kept),
# manual pages and translations; apt fetches no translations and keeps no downloaded packages.
cat > "$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EXCLUDES'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EXCLUDES
echo 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-no-languages"
cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CLEAN
# What is there already goes the same way.
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,groff,info,lintian,linda,locale}/*
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar --numeric-owner -C "$root" -c . \
    | docker import --change 'CMD ["bash"]' --change "LABEL $label=$recipe" \
        --message "debootstrap --variant=minbase bookworm, trimmed as slim" - "$image" >/dev/null
echo "base image $image: made from $mirror"
