#!/bin/sh
# Assemble the runtime root filesystem into $1 from what the build stage installed with apt:
# only the programs the worker runs (python3.11, git over https, tini, sh, env, claude), the
# shared libraries they link (found with ldd), the Python stdlib, the worker's venv, CA roots
# and the worker user. No apt, dpkg, perl or compilers reach the final image.
set -eu
root=$1
# Debian's merged-/usr layout, so /lib64/ld-linux and /bin/sh resolve as on the build stage.
mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/usr/lib64" "$root/usr/sbin"
for dir in bin lib lib64 sbin; do ln -sfn "usr/$dir" "$root/$dir"; done

copy() {  # copy paths with their parents, keeping symlinks and (within one call) hard links
  for path in "$@"; do
    [ -e "$path" ] || [ -L "$path" ] || { echo "assemble: missing $path" >&2; exit 1; }
  done
  cp -a --parents "$@" "$root/"
}

programs="/usr/bin/python3.11 /usr/bin/git /usr/lib/git-core/git-remote-https
          /usr/lib/git-core/git-remote-http /usr/bin/tini /usr/bin/dash /usr/bin/env
          /usr/bin/id /usr/local/bin/claude"
copy $programs /usr/bin/python3 /usr/lib/git-core/git
ln -sf dash "$root/usr/bin/sh"

# Shared libraries: every ELF we ship, including Python extension modules.
elves=$( (echo "$programs" | tr ' ' '\n'; find /usr/lib/python3.11/lib-dynload /opt/venv -name '*.so*') | grep -v '^$')
libs=$(for elf in $elves; do ldd "$elf" 2>/dev/null; done | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | sort -u)
for lib in $libs; do
  copy "$lib"
  real=$(readlink -f "$lib"); [ "$real" = "$lib" ] || copy "$real"
done

# Python stdlib without what a headless worker never imports.
cp -a --parents /usr/lib/python3.11 "$root/"
rm -rf "$root"/usr/lib/python3.11/test "$root"/usr/lib/python3.11/idlelib \
       "$root"/usr/lib/python3.11/tkinter "$root"/usr/lib/python3.11/lib2to3 \
       "$root"/usr/lib/python3.11/ensurepip "$root"/usr/lib/python3.11/turtledemo \
       "$root"/usr/lib/python3.11/pydoc_data "$root"/usr/lib/python3.11/config-3.11-x86_64-linux-gnu
copy /usr/lib/python3/dist-packages 2>/dev/null || mkdir -p "$root/usr/lib/python3/dist-packages"
copy /opt/venv /etc/ssl/certs/ca-certificates.crt /usr/share/git-core/templates/description
# git reads /etc/gitconfig only if present; the worker passes its hardening on the command line.

# The worker user (fixed uid/gid 10001) and a minimal /etc.
mkdir -p "$root/etc" "$root/home/worker/.claude" "$root/tmp/fondation" "$root/run/claude-credentials" "$root/var/log/fondation-worker"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nworker:x:10001:10001:Fondation worker:/home/worker:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nworker:x:10001:\n' >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
chown -R 10001:10001 "$root/home/worker" "$root/tmp/fondation" "$root/var/log/fondation-worker"
chmod 0700 "$root/home/worker/.claude"
chmod 1777 "$root/tmp"
