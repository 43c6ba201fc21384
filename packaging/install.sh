#!/bin/sh
# Installs hostwatch as a systemd service on a host without dpkg: the binary,
# the unit, the default config (an existing one is kept), the `hostwatch`
# system user (in group `adm`, to read /var/log) and its state directory,
# then enables and starts the service. Running it again upgrades in place.
#
#   packaging/install.sh [--binary FILE] [--prefix DIR] [--destdir DIR]
#   packaging/install.sh --uninstall [--purge] [--prefix DIR] [--destdir DIR]
#
# --binary   the hostwatch binary (default: target/release/hostwatch of this
#            tree, or hostwatch next to this script)
# --prefix   where the binary and docs go (default: /usr/local)
# --destdir  a root to install into instead of / (also $DESTDIR): the user
#            is written to its etc/passwd, the unit enabled offline in it,
#            nothing is started
# --uninstall  stops and removes what the install made; the config is kept
#            if it was changed, the state (/var/lib/hostwatch) if not empty
# --purge    with --uninstall: remove the config and the state as well
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=
destdir=${DESTDIR:-}
binary=
uninstall=no
purge=no

# The comment at the top of this file.
usage() {
    sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=${2:?}; shift 2 ;;
        --binary=*) binary=${1#*=}; shift ;;
        --prefix) prefix=${2:?}; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --destdir) destdir=${2:?}; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        --uninstall) uninstall=yes; shift ;;
        --purge) purge=yes; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
    esac
done
destdir=${destdir%/}

unit=/etc/systemd/system/hostwatch.service
tmpfiles=/etc/tmpfiles.d/hostwatch.conf
# --uninstall without --prefix removes the binary the installed unit runs.
if [ -z "$prefix" ] && [ "$uninstall" = yes ] && [ -f "$destdir$unit" ]; then
    prefix=$(sed -n 's|^ExecStart=\(.*\)/bin/hostwatch run .*|\1|p' "$destdir$unit")
fi
prefix=${prefix:-/usr/local}
bin=$prefix/bin/hostwatch
docs=$prefix/share/doc/hostwatch
config_dir=/etc/hostwatch
config=$config_dir/agent.yaml
state=/var/lib/hostwatch
user=hostwatch

say() { echo "hostwatch: $*"; }

# systemd manages services only where it runs as the init system (the test
# debhelper uses); elsewhere (a container, a --destdir) units are only
# enabled, offline.
systemd_running() { [ -z "$destdir" ] && [ -d /run/systemd/system ]; }

# useradd and friends write to the --destdir's user database, if any.
with_prefix() {
    if [ -n "$destdir" ]; then
        "$@" --prefix "$destdir"
    else
        "$@"
    fi
}

# Ids from the target's own database: with --destdir the user exists there,
# not on the host running this script.
id_of() { awk -F: -v n="$2" '$1 == n { print $3 }' "$destdir/etc/$1" 2>/dev/null; }
has_user() { [ -n "$(id_of passwd "$user")" ]; }

if [ "$uninstall" = yes ]; then
    if systemd_running; then
        systemctl disable --now hostwatch.service >/dev/null 2>&1 || true
    elif [ -e "$destdir$unit" ]; then
        systemctl --root="${destdir:-/}" disable hostwatch.service >/dev/null 2>&1 || true
    fi
    rm -f "$destdir$bin" "$destdir$unit" "$destdir$tmpfiles"
    rm -f "$destdir/etc/systemd/system/multi-user.target.wants/hostwatch.service"
    rm -rf "$destdir$docs"
    if systemd_running; then
        systemctl daemon-reload
    fi
    if [ "$purge" = yes ]; then
        rm -rf "$destdir$config_dir" "$destdir$state"
    else
        # An unchanged default config goes; one the operator edited stays.
        if [ -f "$destdir$config" ] && cmp -s "$destdir$config" "$here/agent.yaml"; then
            rm -f "$destdir$config"
        fi
        rmdir "$destdir$config_dir" 2>/dev/null || true
        rmdir "$destdir$state" 2>/dev/null || true
        [ ! -e "$destdir$config" ] || say "kept $config (changed; --purge removes it)"
        [ ! -e "$destdir$state" ] || say "kept $state (checkpoints, buffers; --purge removes it)"
    fi
    if has_user; then
        with_prefix userdel "$user"
    fi
    # userdel leaves the group when another user has it as primary group.
    if [ -n "$(id_of group "$user")" ]; then
        with_prefix groupdel "$user" 2>/dev/null || true
    fi
    say "uninstalled"
    exit 0
fi

if [ -z "$binary" ]; then
    for b in "$here/../target/release/hostwatch" "$here/hostwatch"; do
        if [ -x "$b" ]; then binary=$b; break; fi
    done
fi
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "install.sh: no hostwatch binary: build it (cargo build --release) or give --binary FILE" >&2
    exit 66
fi

# The user: a system account without a login, in `adm` to read /var/log.
nologin=/usr/sbin/nologin
[ -x "$nologin" ] || nologin=/sbin/nologin
if ! has_user; then
    with_prefix useradd --system --user-group --no-create-home \
        --home-dir "$state" --shell "$nologin" --comment "hostwatch agent" "$user"
    say "created the user $user"
fi
if [ -n "$(id_of group adm)" ]; then
    with_prefix usermod --append --groups adm "$user"
else
    say "no group adm here: give $user read access to the logs it should tail"
fi
uid=$(id_of passwd "$user")
gid=$(id_of group "$user")

install -D -m 0755 "$binary" "$destdir$bin"

# The unit runs the binary where this install put it.
mkdir -p "$destdir${unit%/*}"
sed -e "s|/usr/bin/hostwatch|$bin|g" \
    -e "s|/usr/share/doc/hostwatch|$docs|g" \
    "$here/systemd/hostwatch.service" >"$destdir$unit.new"
chmod 0644 "$destdir$unit.new"
mv -f "$destdir$unit.new" "$destdir$unit"
install -D -m 0644 "$here/systemd/hostwatch.tmpfile" "$destdir$tmpfiles"
if [ -f "$here/../docs/reference.md" ]; then
    install -D -m 0644 "$here/../docs/reference.md" "$destdir$docs/reference.md"
fi

# The config may hold secrets: readable by the service's group only. One
# that exists is the operator's and is kept.
install -d -m 0750 -o 0 -g "$gid" "$destdir$config_dir"
if [ -e "$destdir$config" ]; then
    say "kept $config"
else
    install -m 0640 -o 0 -g "$gid" "$here/agent.yaml" "$destdir$config"
    say "installed the default $config"
fi
install -d -m 0750 -o "$uid" -g "$gid" "$destdir$state"

if systemd_running; then
    systemctl daemon-reload
    "$bin" validate --config "$config"
    if systemctl is-active --quiet hostwatch.service; then
        # An upgrade: the new binary and unit take over.
        systemctl enable hostwatch.service
        systemctl restart hostwatch.service
    else
        systemctl enable --now hostwatch.service
    fi
    say "installed; systemctl status hostwatch, journalctl -u hostwatch"
else
    systemctl --root="${destdir:-/}" enable hostwatch.service >/dev/null 2>&1
    say "installed and enabled; systemd does not run here, so nothing was started"
fi
