#!/bin/sh
# The build of Debian's redis package (debian/rules, override_dh_auto_build)
# without debhelper: the same flags from dpkg-buildflags, the same make
# variables. Run at the top of the unpacked source tree; arguments go to
# make (-j2, install PREFIX=DIR).
set -e
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
export DEB_CFLAGS_MAINT_APPEND=-I/usr/include/liblzf
export DEB_LDFLAGS_MAINT_APPEND="-Wl,-no-as-needed -ldl -latomic -llzf"
CFLAGS=$(dpkg-buildflags --get CFLAGS)
CPPFLAGS=$(dpkg-buildflags --get CPPFLAGS)
LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
export CFLAGS CPPFLAGS LDFLAGS
export BUILD_TLS=yes
exec make V=1 USE_SYSTEM_JEMALLOC=yes USE_SYSTEMD=yes USE_JEMALLOC=yes "$@"
